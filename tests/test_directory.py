"""The operator's directory (``gateway clients add --kommunkod / --primary-care``, ``gateway
directory load``): who receives LUSEN admission notices is registered by the operator, one
municipality (organisation number) per kommunkod, and a conflict is refused whole."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gateway.auth.directory import Directory, DirectoryError, Entry
from gateway.cli import cli

HALMSTAD, HALMSTAD_UNIT, PRETENDER, VC = ("SE2120001181-HALM", "SE2120001181-HEMT", "SE5566778899-FAKE",
                                         "SE2321000016-VC01")


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_DB", str(tmp_path / "gw.sqlite"))
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, list(args))
    invoke.db = str(tmp_path / "gw.sqlite")
    invoke.tmp = tmp_path
    return invoke


def routes(db: str, hsa: str) -> tuple[str, ...]:
    directory = Directory(db)
    try:
        return directory.routes(hsa)
    finally:
        directory.close()


def test_registering_a_client_with_a_kommunkod_routes_its_notices(run):
    r = run("clients", "add", "--name", "Halmstads kommun", "--organization", HALMSTAD, "--kommunkod", "1380",
            "--generate-key", str(run.tmp / "k.pem"))
    assert r.exit_code == 0, r.output
    assert routes(run.db, HALMSTAD) == ("kommun:1380",)
    r = run("clients", "add", "--name", "Hemtjänsten", "--organization", HALMSTAD_UNIT, "--kommunkod", "1380",
            "--generate-key", str(run.tmp / "u.pem"))
    assert r.exit_code == 0, r.output  # a unit of the same organisation number
    assert routes(run.db, HALMSTAD_UNIT) == ("kommun:1380",)


def test_a_second_organisation_claiming_a_kommunkod_is_refused_and_not_registered(run):
    assert run("clients", "add", "--name", "Halmstads kommun", "--organization", HALMSTAD, "--kommunkod", "1380",
               "--generate-key", str(run.tmp / "k.pem")).exit_code == 0
    r = run("clients", "add", "--name", "Låtsas", "--organization", PRETENDER, "--kommunkod", "1380",
            "--generate-key", str(run.tmp / "p.pem"))
    assert r.exit_code != 0 and "1380" in r.output
    assert routes(run.db, PRETENDER) == ()
    listed = json.loads(run("clients", "list").output)
    assert [c["organization"] for c in listed] == [HALMSTAD]  # the refused client was not added either


def test_a_directory_file_is_loaded_whole_or_not_at_all(run):
    good = {"organizations": [{"hsa": HALMSTAD, "name": "Halmstads kommun", "kommunkod": "1380"},
                              {"hsa": VC, "name": "Vårdcentralen Södra", "primaryCare": True}]}
    path = run.tmp / "directory.json"
    path.write_text(json.dumps(good), encoding="utf-8")
    assert run("directory", "load", str(path)).exit_code == 0
    assert routes(run.db, VC) == (f"vc:{VC}",)
    clash = {"organizations": [{"hsa": "SE2321000016-VC02", "name": "Vårdcentralen Norra", "primaryCare": True},
                               {"hsa": PRETENDER, "name": "Låtsas", "kommunkod": "1380"}]}
    path.write_text(json.dumps(clash), encoding="utf-8")
    r = run("directory", "load", str(path))
    assert r.exit_code == 1 and "nothing loaded" in r.output and "1380" in r.output
    assert routes(run.db, "SE2321000016-VC02") == ()  # the good half of a refused file is not kept


@pytest.mark.parametrize("entry,why", [
    ({"hsa": "not-an-hsa-id", "name": "x", "kommunkod": "1380"}, "hsa"),
    ({"hsa": HALMSTAD, "name": "x", "kommunkod": "13800"}, "kommunkod"),
    ({"hsa": HALMSTAD, "name": "x", "kommunkod": "1380", "primaryCare": True}, "organizations/0"),
    ({"hsa": HALMSTAD, "name": "x", "kommun": "1380"}, "kommun"),
])
def test_a_malformed_directory_file_names_what_to_fix(run, entry, why):
    path = run.tmp / "bad.json"
    path.write_text(json.dumps({"organizations": [entry]}), encoding="utf-8")
    r = run("directory", "load", str(path))
    assert r.exit_code == 1 and str(path) in r.output and why in r.output, r.output


def test_moving_an_organisation_to_another_kommunkod_needs_its_removal_first(tmp_path):
    directory = Directory(str(tmp_path / "gw.sqlite"))
    try:
        directory.register([Entry(HALMSTAD, "Halmstads kommun", "1380")])
        with pytest.raises(DirectoryError, match="remove it first"):
            directory.register([Entry(HALMSTAD, "Halmstads kommun", "1381")])
        assert directory.remove(HALMSTAD)
        directory.register([Entry(HALMSTAD, "Halmstads kommun", "1381")])
        assert directory.routes(HALMSTAD) == ("kommun:1381",)
    finally:
        directory.close()


def test_a_change_by_another_process_is_seen_at_once(tmp_path):
    """The gateway's directory connection sees the operator's registration without a restart."""
    db = str(tmp_path / "gw.sqlite")
    serving, operator = Directory(db), Directory(db)
    try:
        assert serving.routes(HALMSTAD) == ()
        operator.register([Entry(HALMSTAD, "Halmstads kommun", "1380")])
        assert serving.routes(HALMSTAD) == ("kommun:1380",)
        operator.remove(HALMSTAD)
        assert serving.routes(HALMSTAD) == ()
    finally:
        serving.close()
        operator.close()
