"""The statistics seeded for SQLite's planner before there is any data: the statements of the
write path take the index that selects a handful of rows (one patient's match keys, rights and
resources), on a new database and on one seeded by an earlier version."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from carnet.config import Settings
from carnet.db.engine import make_engine
from carnet.db.migrate import current_revision, earlier_seeds, upgrade

PLANS = {  # statement -> the index its plan must search
    "DELETE FROM patient_match_keys WHERE patient_id = 'p'": "ix_patient_match_keys_patient (patient_id=?)",
    "SELECT res_type, content FROM resources WHERE patient_id = 'p' AND res_type IN "
    "('Patient', 'CareTeam', 'Consent', 'RelatedPerson') AND deleted IS 0": "ix_resources_patient (patient_id=?)",
    "DELETE FROM access_rights WHERE patient_id = 'p'": "ix_access_rights_patient (patient_id=?)",
    "SELECT patient_id FROM patient_match_keys WHERE key IN ('a', 'b') LIMIT 50":
        "ix_patient_match_keys_key (key=?)",
}


def _plans(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {q: " ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + q)) for q in PLANS}


def _engine(tmp_path: Path) -> Engine:
    return make_engine(Settings(data_dir=tmp_path))


def test_a_new_database_plans_one_patients_rows_by_its_index(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    upgrade(engine)
    for query, plan in _plans(engine).items():
        assert PLANS[query] in plan, (query, plan)
    engine.dispose()


def test_an_upgrade_replaces_the_earlier_seeds_and_keeps_measured_statistics(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    upgrade(engine)
    old = earlier_seeds()
    with engine.begin() as conn:  # the database as version 0013 left it, one index measured since
        for index, stat in old.items():
            conn.exec_driver_sql("UPDATE sqlite_stat1 SET stat = ? WHERE idx = ?", (stat, index))
        conn.exec_driver_sql("UPDATE sqlite_stat1 SET stat = '1234 7' WHERE idx = 'ix_access_rights_patient'")
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0013'")
    engine.dispose()
    engine = _engine(tmp_path)
    assert "ANY(key)" in _plans(engine)[next(iter(PLANS))]  # the skip-scan of every key
    upgrade(engine)
    assert current_revision(engine) == "0014"
    with engine.connect() as conn:
        stats = dict(conn.exec_driver_sql("SELECT idx, stat FROM sqlite_stat1 WHERE idx IS NOT NULL").all())
    assert stats["ix_access_rights_patient"] == "1234 7"
    assert stats["ix_patient_match_keys_patient"] != old["ix_patient_match_keys_patient"]
    assert PLANS[next(iter(PLANS))] in _plans(engine)[next(iter(PLANS))]
    engine.dispose()
