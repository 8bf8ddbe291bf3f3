"""``carnet policy explain``: why can someone (not) see a record or a document (DICAH, step by step)."""

from __future__ import annotations

from pathlib import Path

import click

from carnet.cli.keys import _engine, data_option


@click.group("policy")
def policy_group() -> None:
    """Access control (DICAH): the access matrix and the reasons of each decision."""


@policy_group.command("explain")
@data_option
@click.option("--who", required=True,
              help="practitioner:<national id>, patient:<INS matricule> or system")
@click.option("--patient", "patient", required=True, help="the record: Patient id or INS matricule")
@click.option("--document", default=None, help="a DocumentReference id in that record")
@click.option("--emergency", is_flag=True, help="as with an emergency (bris de glace) token for the record")
def explain_command(data: Path | None, who: str, patient: str, document: str | None, emergency: bool) -> None:
    """Print each DICAH condition with its reason, and the verdict; exit status 1 when denied."""
    from dataclasses import replace

    from carnet.auth import people
    from carnet.auth.principal import AccessMode, Principal
    from carnet.errors import NotFound
    from carnet.policy.explain import explain
    from carnet.policy.matrix import load_habilitations
    from carnet.wiring import build_router

    kind, _, ident = who.partition(":")
    if kind not in ("practitioner", "patient", "system") or (kind != "system") != bool(ident):
        raise click.ClickException("--who: practitioner:<national id>, patient:<INS matricule> or system")
    with _engine(data) as (settings, engine):
        router = build_router(settings, engine)
        if kind == "system":
            principal = Principal.system()
        elif kind == "practitioner":
            principal = people.practitioner_principal(router, ident)
        else:
            principal = people.patient_principal(router, people.patient_by_matricule(router, ident),
                                                 strong_auth=True)
        try:
            record = people.patient_by_id(router, patient)
        except NotFound:
            record = people.patient_by_matricule(router, patient)
        if emergency:
            principal = replace(principal, access_mode=AccessMode.EMERGENCY, patient=record["id"])
        with engine.connect() as conn:
            result = explain(conn, load_habilitations(settings.habilitations_file), principal, record["id"],
                             document)
    for line in result.lines():
        click.echo(line)
    if not result.allowed:
        raise SystemExit(1)
