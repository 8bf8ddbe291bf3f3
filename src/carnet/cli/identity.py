"""``carnet identity``: probable duplicate patients, and the operator's merge.

``merge`` goes through the FHIR router's ``Patient/$merge`` with an operator principal, so the CLI
writes exactly as the API does (validation, write hooks, history, the merge record)."""

from __future__ import annotations

from pathlib import Path

import click

from carnet.auth.principal import Kind, Principal

data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="data folder (default ./carnet-data, or CARNET_DATA_DIR)")

CLI_OPERATOR = Principal(Kind.OPERATOR, "carnet-cli", frozenset({"system/*.cruds"}),
                         display="carnet identity (operator)")


@click.group("identity")
def identity_group() -> None:
    """Patient identities: probable duplicates and merges."""


@identity_group.command("duplicates")
@data_option
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="most pairs listed")
def duplicates(data: Path | None, limit: int) -> None:
    """List probable duplicate patients: same traits with different matricules, same matricule with
    different traits."""
    from carnet.cli.main import _settings
    from carnet.db.engine import make_engine
    from carnet.db.migrate import upgrade
    from carnet.identity.duplicates import find_duplicates

    engine = make_engine(_settings(data))
    upgrade(engine)
    try:
        with engine.connect() as conn:
            pairs = find_duplicates(conn, limit)
    finally:
        engine.dispose()
    for pair in pairs:
        click.echo(pair.describe())
    click.echo(f"{len(pairs)} doublon(s) probable(s) / probable duplicate pair(s)")


@identity_group.command("merge")
@click.argument("source")
@click.argument("target")
@data_option
@click.option("--preview", is_flag=True, help="say what would move, change nothing")
def merge(source: str, target: str, data: Path | None, preview: bool) -> None:
    """Merge patient SOURCE into TARGET (ids or Patient/ids): references move to TARGET, SOURCE is kept
    inactive with a replaced-by link."""
    from carnet.app import create_app
    from carnet.cli.main import _settings
    from carnet.db.migrate import upgrade
    from carnet.fhir import jsonio
    from carnet.fhir.router import FHIR_JSON, FhirRequest, FhirRouter

    app = create_app(_settings(data))
    router: FhirRouter = app.state.fhir
    upgrade(router.engine)
    params: list[dict[str, object]] = [
        {"name": "source-patient", "valueReference": {"reference": _reference(source)}},
        {"name": "target-patient", "valueReference": {"reference": _reference(target)}}]
    if preview:
        params.append({"name": "preview", "valueBoolean": True})
    body = jsonio.dumps({"resourceType": "Parameters", "parameter": params})
    try:
        resp = router.handle(FhirRequest("POST", "Patient/$merge", headers={"content-type": FHIR_JSON},
                                         body=body), CLI_OPERATOR)
    finally:
        router.engine.dispose()
    answer = jsonio.loads(resp.json_bytes()) if resp.body is not None else {}
    outcomes = [p["resource"] for p in answer.get("parameter") or [] if p.get("name") == "outcome"]
    issues = answer.get("issue") or (outcomes[0].get("issue") if outcomes else []) or []
    text = "\n".join(str(i.get("diagnostics", "")) for i in issues)
    if resp.status != 200:
        raise click.ClickException(text or f"merge refused ({resp.status})")
    click.echo(text)


def _reference(value: str) -> str:
    return value if value.startswith("Patient/") else f"Patient/{value}"


if __name__ == "__main__":
    identity_group()
