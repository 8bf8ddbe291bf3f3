"""The committed fuzz corpora (``bench/fuzz/corpus/``) replayed through the harnesses' own property
checks, without atheris: every input the fuzzer kept (the seeds, and the inputs that reached new code)
must still be parsed or refused as documented — only the documented error types, bilingual
messages, the matricule key of the independent oracle, HTML with no active content, search
statements that run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "bench" / "fuzz"
TARGETS = ("cda", "cda_html", "matricule", "search")


def _harness(target: str) -> ModuleType:
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))  # the harnesses import their shared module, _fuzzing
    name = f"carnet_fuzz_{target}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FUZZ / f"{target}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.parametrize("target", TARGETS)
def test_every_corpus_input_keeps_its_properties(target: str) -> None:
    harness = _harness(target)
    files = sorted((FUZZ / "corpus" / target).iterdir())
    assert len(files) >= 5, f"corpus/{target} is missing or nearly empty"
    seeds = sys.modules.get("seeds") or importlib.import_module("seeds")
    inputs = [(p.name, p.read_bytes()) for p in files]
    inputs += [(f"seed {n}", data) for n, data in enumerate(seeds.TARGETS[target]())]
    failures = []
    for name, data in inputs:
        try:
            harness.check(data)
        except Exception as exc:
            failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
    assert not failures, "\n".join(failures)


def test_the_properties_catch_what_they_guard() -> None:
    """The checks are not vacuous: a fragment with active content, a wrong key and a refusal that is
    not bilingual are reported."""
    html = _harness("cda_html")
    fuzzing = sys.modules["_fuzzing"]
    for bad in ('<div class="cda-document"><script>x()</script></div>',
                '<div class="cda-document"><p onclick="x()">a</p></div>',
                '<div class="cda-document"><span class="cda-url" style="x">a</span></div>',
                '<div class="cda-document">a < b</div>'):
        with pytest.raises(fuzzing.PropertyFailed):
            html.check_fragment(bad)
    html.check_fragment('<div class="cda-document"><p>a &lt; b</p><td colspan="2">x</td></div>')
    html.check_fragment('<div class="cda-document"><dd>MAR href=&quot;https:// onclick=x</dd></div>')
    matricule = _harness("matricule")
    assert matricule.oracle_key("253072B073004") == "70"
    assert matricule.oracle("2 53 07 2B 073 004 70") == ("253072B07300470", True, True)
    assert matricule.oracle("253072B07300471")[1:] == (True, False)
    from carnet.errors import Invalid

    with pytest.raises(fuzzing.PropertyFailed):
        fuzzing.check_error(Invalid("only French"), (Invalid,), bilingual=True)
