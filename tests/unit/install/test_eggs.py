"""Egg import: every real egg in ../shared/eggs, the format's quirks, and eggs becoming servers."""
import copy
import json
from collections import Counter
from pathlib import Path

import pytest

from roost.install.eggs import EggError, egg_to_definition, load_egg, parse_egg, stop_config, validate_environment
from roost.install.rules import VariableValidationError
from roost.server.configfiles import apply_config_files
from roost.server.definition import ServerDefinition

EGGS = Path(__file__).resolve().parents[4] / "shared" / "eggs"
UUID = "6c1f1b0e-9a43-4d7e-8f43-0d1c2a3b4c5d"

# Each refusal must be a defect of the egg itself, checked by hand, with the reason roost gives.
# None of the 785 is refused today. Closest call: the three Mordhau (Wine) eggs declare
# WINDOWS_INSTALL twice with different rules; panels key variables by name (the last wins), so
# roost imports them the same way and warns (see test_duplicate_variables_last_one_wins).
EXPECTED_REFUSALS: dict[str, str] = {}


def egg_files():
    return sorted(p for p in EGGS.glob("*/*.json"))


@pytest.mark.skipif(not EGGS.is_dir(), reason="../shared/eggs is not there")
def test_every_real_egg_imports_or_is_refused_for_a_real_defect(capsys):
    imported, refused, warned = [], {}, Counter()
    for path in egg_files():
        rel = str(path.relative_to(EGGS))
        try:
            egg = load_egg(path)
        except EggError as e:
            refused[rel] = str(e)
            continue
        imported.append(egg)
        warned.update(w.split(":")[0] for w in egg.warnings)
        # and each one can become a server definition the daemon reads
        d = egg_to_definition(egg, uuid=UUID, name=egg.name, validate=False, port=25565)
        model = ServerDefinition.model_validate(d)
        assert model.settings.invocation == egg.startup
        assert model.process_configuration.stop.type in ("command", "signal", "stop")
    total = len(egg_files())
    with capsys.disabled():
        print(f"\neggs: {total} files, {len(imported)} imported, {len(refused)} refused")
        for rel, reason in sorted(refused.items()):
            print(f"  refused {rel}: {reason}")
    assert total == 785
    assert len(imported) + len(refused) == total
    assert sorted(refused) == sorted(EXPECTED_REFUSALS)
    for rel, reason in refused.items():
        assert EXPECTED_REFUSALS[rel] in reason, reason
    assert Counter(e.version for e in imported) == {"PTDL_v2": 779, "PTDL_v1": 6}
    assert warned  # odd-but-importable eggs are reported, not refused


def _egg(**changes):
    base = {
        "meta": {"version": "PTDL_v2", "update_url": None},
        "name": "Test", "author": "a@b.c", "description": "d", "features": None,
        "docker_images": {"Java 21": "ghcr.io/pterodactyl/yolks:java_21"},
        "file_denylist": [],
        "startup": "java -jar {{SERVER_JARFILE}}",
        "config": {
            "files": json.dumps({"server.properties": {"parser": "properties", "find": {
                "server-port": "{{server.build.default.port}}"}}}),
            "startup": json.dumps({"done": ")! For help, type "}),
            "logs": "{}",
            "stop": "stop",
        },
        "scripts": {"installation": {"script": "#!/bin/ash\r\necho hi\r\n", "container": "alpine:3", "entrypoint": "ash"}},
        "variables": [{"name": "Jar", "description": "", "env_variable": "SERVER_JARFILE", "default_value": "server.jar",
                       "user_viewable": True, "user_editable": True,
                       "rules": "required|regex:/^([\\w\\d._-]+)(\\.jar)$/", "field_type": "text"}],
    }
    for k, v in changes.items():
        cur = base
        parts = k.split("__")
        for p in parts[:-1]:
            cur = cur[p]
        if v is KeyError:
            cur.pop(parts[-1], None)
        else:
            cur[parts[-1]] = v
    return base


def test_a_plain_v2_egg():
    egg = parse_egg(json.dumps(_egg()))
    assert egg.version == "PTDL_v2" and egg.name == "Test" and egg.features == ()
    assert egg.docker_images == {"Java 21": "ghcr.io/pterodactyl/yolks:java_21"}
    assert egg.done == (")! For help, type ",) and egg.stop_config == {"type": "command", "value": "stop"}
    assert egg.config_files == {"server.properties": {"parser": "properties", "find": {
        "server-port": "{{server.build.default.port}}"}}}
    assert egg.install.remote_shape() == {"container_image": "alpine:3", "entrypoint": "ash",
                                          "script": "#!/bin/ash\necho hi\n"}
    assert [v.env_variable for v in egg.variables] == ["SERVER_JARFILE"] and egg.warnings == ()


def test_v1_images_and_quirks():
    egg = parse_egg(_egg(meta={"version": "PTDL_v1"}, docker_images=KeyError,
                         images=["quay.io/a:1", "quay.io/a:2"], file_denylist="", features=None))
    assert egg.docker_images == {"quay.io/a:1": "quay.io/a:1", "quay.io/a:2": "quay.io/a:2"}
    assert egg.file_denylist == ()
    egg = parse_egg(_egg(docker_images=["img:1"]))  # an array instead of an object
    assert egg.docker_images == {"img:1": "img:1"}
    egg = parse_egg(_egg(docker_images=None, images=["img:2"], image=None))
    assert egg.default_image == "img:2"
    egg = parse_egg(_egg(meta={"version": "PTDL_v1"}, docker_images=KeyError, image="img:3"))
    assert egg.docker_images == {"img:3": "img:3"}


def test_json_in_string_fields_and_their_odd_shapes():
    egg = parse_egg(_egg(config__files="[]", config__logs=KeyError,
                         config__startup=json.dumps({"done": ["Done", "regex:^ready$"], "userInteraction": ["y/n"]})))
    assert egg.config_files == {} and egg.config_logs == {}
    assert egg.done == ("Done", "regex:^ready$") and egg.user_interaction == ("y/n",)
    assert egg.process_configuration()["startup"] == {"done": ["Done", "regex:^ready$"], "user_interaction": [],
                                                     "strip_ansi": False}
    egg = parse_egg(_egg(config__logs='{"custom": true, "location": "logs/latest.log"}'))
    assert egg.config_logs == {"custom": True, "location": "logs/latest.log"}


def test_rules_as_a_list_or_an_empty_object():
    v = _egg()["variables"][0]
    egg = parse_egg(_egg(variables=[dict(v, rules=["required", "string", "max:20"]),
                                    dict(v, env_variable="BETA", rules={}, default_value=""),
                                    {k: x for k, x in dict(v, env_variable="PLAIN", rules="required|string|").items()
                                     if k != "field_type"}]))
    assert [x.rules for x in egg.variables] == [["required", "string", "max:20"], "", "required|string|"]
    assert egg.variables[2].field_type == "text"


@pytest.mark.parametrize("stop,expected", [
    ("^C", {"type": "stop", "value": None}),
    ("^c", {"type": "stop", "value": None}),
    ("^X", {"type": "signal", "value": "X"}),
    ("^SIGTERM", {"type": "signal", "value": "SIGTERM"}),
    ("^^C", {"type": "signal", "value": "^C"}),
    ("stop", {"type": "command", "value": "stop"}),
    ("shutdown; exit;", {"type": "command", "value": "shutdown; exit;"}),
    ("", {"type": "stop", "value": None}),
])
def test_stop_conversion(stop, expected):
    assert stop_config(stop) == expected


@pytest.mark.parametrize("change,field", [
    ({"meta": {"version": "PLCN_v3"}}, "meta.version"),
    ({"meta": {"version": "PTDL_v9"}}, "meta.version"),
    ({"meta": KeyError}, "meta"),
    ({"name": KeyError}, "name"),
    ({"startup": KeyError}, "startup"),
    ({"startup": "   "}, "startup"),
    ({"docker_images": {"Java": 17}}, "docker_images['Java']"),
    ({"docker_images": "img"}, "docker_images"),
    ({"features": "eula"}, "features"),
    ({"config__files": "{not json"}, "config.files"),
    ({"config__files": '["a"]'}, "config.files"),
    ({"config__files": '{"a.yml": {"parser": "toml", "find": {}}}'}, "config.files['a.yml'].parser"),
    ({"config__files": '{"a.yml": {"parser": "yaml", "find": "x"}}'}, "config.files['a.yml'].find"),
    ({"config__startup": '{"done": 5}'}, "config.startup.done"),
    ({"config__startup": "{"}, "config.startup"),
    ({"config__logs": "nope"}, "config.logs"),
    ({"config__stop": ["stop"]}, "config.stop"),
    ({"scripts__installation": "bash"}, "scripts.installation"),
    ({"variables": {"a": 1}}, "variables[0]"),
    ({"variables": [{"name": "x"}]}, "variables[0].env_variable"),
    ({"variables": [{"env_variable": "BAD NAME"}]}, "variables[0].env_variable"),
    ({"variables": [{"env_variable": "A", "rules": 5}]}, "variables[0].rules"),
    ({"variables": [{"env_variable": "A", "user_editable": "maybe"}]}, "variables[0].user_editable"),
])
def test_malformed_eggs_are_refused_naming_the_field(change, field):
    with pytest.raises(EggError) as e:
        parse_egg(_egg(**change), source="x.json")
    assert e.value.field == field and str(e.value).startswith(f"x.json: {field}: ")


def test_not_json_and_not_an_object():
    with pytest.raises(EggError, match="not valid JSON"):
        parse_egg(b"{")
    with pytest.raises(EggError, match="JSON object"):
        parse_egg("[]")
    assert parse_egg(b"\xef\xbb\xbf" + json.dumps(_egg()).encode()).name == "Test"  # a BOM is fine


def test_warnings_for_odd_but_importable_eggs():
    egg = parse_egg(_egg(config__startup='{"done": ""}', config__stop="",
                         config__files=json.dumps({"a.ini": {"parser": "ini", "find": {
                             "x": "{{server.build.env.NOPE}}", "y": "{{QUERY}}", "z": "{{server.build.env.{X}}"}}}),
                         variables=[{"env_variable": "SERVER_PORT", "default_value": "x", "rules": "integer|frob"}]))
    text = "\n".join(egg.warnings)
    assert "never be reported as running" in text and "SIGTERM" in text
    assert "{{server.build.env.NOPE}} names no variable" in text and "unknown placeholder {{QUERY}}" in text
    assert "malformed placeholder" in text and "SERVER_PORT is a name the daemon sets" in text
    assert "`frob`: unknown rule" in text and "default of SERVER_PORT breaks its own rules" in text


# --- eggs becoming servers -------------------------------------------------------------------

def test_egg_to_definition_with_defaults_and_overrides():
    egg = parse_egg(_egg())
    d = egg_to_definition(egg, uuid=UUID, name="My server", environment_overrides={"SERVER_JARFILE": "paper.jar"},
                          ip="127.0.0.1", port=25570, memory_limit=2048)
    model = ServerDefinition.model_validate(d)
    assert model.settings.environment == {"SERVER_JARFILE": "paper.jar"}
    assert model.startup_command() == "java -jar paper.jar"
    assert model.settings.container.image == "ghcr.io/pterodactyl/yolks:java_21"
    assert model.settings.allocations.mappings == {"127.0.0.1": [25570]}
    assert model.settings.egg.id == egg.egg_id and model.settings.build.memory_limit == 2048
    assert d["process_configuration"]["configs"] == [{"parser": "properties", "file": "server.properties", "replace": [
        {"match": "server-port", "replace_with": "{{server.build.default.port}}"}]}]


def test_invalid_values_name_the_variable_and_the_rule():
    egg = parse_egg(_egg())
    with pytest.raises(VariableValidationError) as e:
        egg_to_definition(egg, uuid=UUID, name="x", environment_overrides={"SERVER_JARFILE": "server.zip", "NOPE": "1"})
    got = [(f.variable, f.rule) for f in e.value.failures]
    assert got == [("SERVER_JARFILE", "regex:/^([\\w\\d._-]+)(\\.jar)$/"), ("NOPE", "variable")]
    with pytest.raises(VariableValidationError, match="docker_image"):
        egg_to_definition(egg, uuid=UUID, name="x", docker_image="evil:latest")
    d = egg_to_definition(egg, uuid=UUID, name="x", docker_image="Java 21")  # a label works too
    assert d["settings"]["container"]["image"] == "ghcr.io/pterodactyl/yolks:java_21"


def test_users_cannot_change_variables_that_are_not_editable():
    v = _egg()["variables"][0]
    egg = parse_egg(_egg(variables=[dict(v, user_editable=False)]))
    failures = [f for r in validate_environment(egg, {"SERVER_JARFILE": "x.jar"}, admin=False) for f in r.failures]
    assert [(f.variable, f.rule) for f in failures] == [("SERVER_JARFILE", "user_editable")]
    assert all(r.ok for r in validate_environment(egg, {"SERVER_JARFILE": "x.jar"}, admin=True))


@pytest.mark.skipif(not EGGS.is_dir(), reason="../shared/eggs is not there")
def test_a_real_egg_end_to_end_paper(tmp_path):
    egg = load_egg(EGGS / "panel" / "database__Seeders__eggs__minecraft__egg-paper.json")
    d = egg_to_definition(egg, uuid=UUID, name="Paper", environment_overrides={"MINECRAFT_VERSION": "1.20.4"},
                          port=25580)
    assert egg.stop_config == {"type": "command", "value": "stop"} and egg.install.container.endswith("installers:alpine")
    (tmp_path / "server.properties").write_text("#Minecraft server properties\nserver-ip=\nserver-port=25565\n"
                                                 "query.port=25565\nmotd=A Minecraft Server\n")
    res = apply_config_files(tmp_path, d["process_configuration"]["configs"], settings=d)
    assert [r.status for r in res] == ["updated"]
    assert (tmp_path / "server.properties").read_text() == (
        "#Minecraft server properties\nserver-ip=0.0.0.0\nserver-port=25580\nquery.port=25580\nmotd=A Minecraft Server\n")


@pytest.mark.skipif(not EGGS.is_dir(), reason="../shared/eggs is not there")
def test_real_eggs_with_odd_shapes_from_the_readme():
    feather = load_egg(EGGS / "minecraft" / "java__feather__egg-feather.json")
    assert feather.docker_images and all(k == v for k, v in feather.docker_images.items())
    old_feather = load_egg(EGGS / "eggs" / "game_eggs__minecraft__java__feather__egg-feather.json")
    assert old_feather.docker_images
    assert load_egg(EGGS / "eggs" / "game_eggs__minecraft__java__krypton__egg-krypton.json").file_denylist == ()
    assert load_egg(EGGS / "games-standalone" / "hytale__pterodactyl-egg-hytale.json").config_files == {}
    assert load_egg(EGGS / "games-standalone" / "foundry_vtt__egg-pterodactyl-foundry-v-t-t.json").config_logs == {}
    ottd = load_egg(EGGS / "games-standalone" / "openttd__egg-open-t-t-d-server.json")
    assert ottd.variable("srv_name").rules == ["required", "string", "max:20"]
    conan = load_egg(EGGS / "games-steamcmd" / "conan_exiles__pterodactyl-egg-conan-exiles-legacy.json")
    assert conan.variable("SRCDS_BETAID").rules == ""
    factorio = load_egg(EGGS / "eggs" / "game_eggs__factorio__factorio__egg-factorio-a-r-m64.json")
    assert "\n" in factorio.startup
    assert load_egg(EGGS / "eggs" / "software__meilisearch__egg-meilisearch.json").name
    titans = load_egg(EGGS / "games-standalone" / "path_of_titans__egg-path-of-titans.json")
    assert any("bare {{QUERY_PORT}}" in w for w in titans.warnings)
    nera = load_egg(EGGS / "games-steamcmd" / "voyagers_of_nera__pterodactyl-egg-voyagers-of-nera.json")
    assert any("malformed placeholder" in w for w in nera.warnings)
    bungee = load_egg(EGGS / "panel" / "database__Seeders__eggs__minecraft__egg-bungeecord.json")
    assert bungee.configs()[0]["replace"][-1]["if_value"].startswith("regex:")


@pytest.mark.skipif(not EGGS.is_dir(), reason="../shared/eggs is not there")
def test_duplicate_variables_last_one_wins():
    egg = load_egg(EGGS / "games-steamcmd" / "mordhau__egg-mordhau-wine.json")
    assert [v.env_variable for v in egg.variables].count("WINDOWS_INSTALL") == 1
    assert egg.variable("WINDOWS_INSTALL").rules == "required|string|in:1"
    assert any("WINDOWS_INSTALL is declared again" in w for w in egg.warnings)


def test_parse_does_not_modify_its_input():
    raw = _egg()
    before = copy.deepcopy(raw)
    parse_egg(raw)
    assert raw == before


@pytest.mark.skipif(not EGGS.is_dir(), reason="../shared/eggs is not there")
def test_every_real_eggs_config_files_apply_cleanly_and_idempotently(tmp_path, monkeypatch):
    """Each egg's `config.files` on an empty data directory: no errors, and a second run is a no-op."""
    import os

    monkeypatch.setattr(os, "fsync", lambda fd: None)  # content is what is checked here, not durability
    node = {"docker": {"network": {"interface": "172.18.0.1"}}}
    statuses = Counter()
    for i, path in enumerate(egg_files()):
        egg = load_egg(path)
        d = egg_to_definition(egg, uuid=UUID, name=egg.name, validate=False, port=27015)
        data = tmp_path / str(i)
        data.mkdir()
        first = apply_config_files(data, d["process_configuration"]["configs"], settings=d, node_config=node)
        second = apply_config_files(data, d["process_configuration"]["configs"], settings=d, node_config=node)
        for r in first:
            statuses[r.status] += 1
            assert r.status in ("created", "skipped"), (path.name, r)
        for r in second:
            assert r.status in ("unchanged", "skipped"), (path.name, r)
    assert statuses["created"] == 332 and statuses["skipped"] == 173  # `file` never creates
