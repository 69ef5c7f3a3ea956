"""Config file rewrites: each parser on real-shaped files, placeholders, and the data-dir fence."""
import configparser
import json
import os
import re
import stat
import string
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.server.configfiles import (
    Replacement as R,
    apply_config_files,
    configs_from_egg_files,
    parse_configs,
    placeholder_structure,
    render_configs,
    rewrite,
    rewrite_file,
    rewrite_ini,
    rewrite_json,
    rewrite_properties,
    rewrite_xml,
    rewrite_yaml,
    substitute_placeholders,
)
from roost.server.definition import ServerDefinition

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UUID = "d3aac109-e8b5-4e33-9e2e-5b6f3e0c4a11"
NODE = {"docker": {"network": {"interface": "172.18.0.1"}}}


def definition(env=None, port=25565, ip="0.0.0.0", memory=1024):
    return {
        "settings": {
            "uuid": UUID,
            "meta": {"name": "srv"},
            "invocation": "java -jar server.jar",
            "environment": env or {},
            "allocations": {"default": {"ip": ip, "port": port}, "mappings": {ip: [port, port + 1]}},
            "build": {"memory_limit": memory, "disk_space": 2048, "cpu_limit": 200},
            "container": {"image": "ghcr.io/pterodactyl/yolks:java_21"},
            "egg": {"id": "egg-1"},
        },
        "process_configuration": {},
    }


# =============================================================================================
# Real-shaped files

SERVER_PROPERTIES = """\
#Minecraft server properties
#Sat Mar 02 10:00:00 UTC 2024
accepts-transfers=false
allow-flight=false
difficulty=easy
enable-query=false
# a comment in the middle stays
gamemode=survival
level-name=world
motd=A Minecraft Server
query.port=25565
rcon.password=
server-ip=
server-port=25565
spawn-protection=16
"""


def test_properties_minecraft_server_properties():
    new, notes = rewrite_properties(SERVER_PROPERTIES, [
        R("server-ip", "0.0.0.0"), R("server-port", "27015"), R("query.port", "27015"),
        R("motd", "Caf\u00e9 \\o/"), R("enable-rcon", "true"),
    ])
    lines = new.splitlines()
    assert lines[:2] == SERVER_PROPERTIES.splitlines()[:2]  # header comments untouched
    assert "# a comment in the middle stays" in lines
    assert "server-ip=0.0.0.0" in lines and "server-port=27015" in lines and "query.port=27015" in lines
    assert "motd=Caf\\u00e9 \\\\o/" in lines  # escaped as Wings writes it
    assert lines[-1] == "enable-rcon=true" and notes == ["enable-rcon: added"]
    # order of the untouched keys is kept
    assert [ln.split("=")[0] for ln in lines if "=" in ln and not ln.startswith("#")][:4] == \
        ["accepts-transfers", "allow-flight", "difficulty", "enable-query"]


def test_properties_separators_continuations_and_if_value():
    text = "key1 : old\\\n    continued\nkey2 value2\n! bang comment\nkey\\ with\\ spaces=v\n"
    new, _ = rewrite_properties(text, [R("key1", "new"), R("key2", "x", if_value="value2"),
                                       R("key with spaces", "w"), R("key2", "y", if_value="nope")])
    assert new == "key1 : new\nkey2 x\n! bang comment\nkey\\ with\\ spaces=w\n"


def test_properties_value_cannot_inject_lines():
    new, _ = rewrite_properties("a=1\n", [R("a", "x\nrcon.password=pwned")])
    assert new == "a=x\\nrcon.password=pwned\n"


BUNGEE_YML = """\
# BungeeCord configuration
prevent_proxy_connections: false
listeners:
- query_port: 25577
  motd: '&1Another Bungee server'
  tab_list: GLOBAL_PING
  query_enabled: false
  host: 0.0.0.0:25577   # where to bind
  forced_hosts:
    pvp.md-5.net: pvp
  priorities:
  - lobby
servers:
  lobby:
    motd: '&1Just another BungeeCord - Forced Host'
    address: localhost:25565
    restricted: false
  pvp:
    address: 127.0.0.1:25566
    restricted: false
  remote:
    address: play.example.com:25565
online_mode: true
ip_forward: false
"""


def test_yaml_bungeecord_config_like_the_egg():
    egg_files = {"config.yml": {"parser": "yaml", "find": {
        "listeners[0].query_port": "{{server.build.default.port}}",
        "listeners[0].host": "0.0.0.0:{{server.build.default.port}}",
        "servers.*.address": {"regex:^(127\\.0\\.0\\.1|localhost)(:\\d{1,5})?$": "{{config.docker.interface}}$2"},
    }}}
    new = _apply_text(egg_files, "config.yml", BUNGEE_YML, definition(port=25600))
    data = yaml.safe_load(new)
    assert data["listeners"][0]["query_port"] == 25600 and data["listeners"][0]["host"] == "0.0.0.0:25600"
    assert data["servers"]["lobby"]["address"] == "172.18.0.1:25565"
    assert data["servers"]["pvp"]["address"] == "172.18.0.1:25566"
    assert data["servers"]["remote"]["address"] == "play.example.com:25565"
    assert "# BungeeCord configuration" in new and "# where to bind" in new  # comments kept
    assert "motd: '&1Another Bungee server'" in new  # quoting kept
    # nothing else moved: the diff is exactly the four values
    changed = [(a, b) for a, b in zip(BUNGEE_YML.splitlines(), new.splitlines()) if a != b]
    assert len(changed) == 4 and len(new.splitlines()) == len(BUNGEE_YML.splitlines())


def test_yaml_types_quoting_and_new_keys():
    text = "a:\n  enabled: true\n  name: old\n  port: 1\nlist: [1, 2]\n"
    new, notes = rewrite_yaml(text, [R("a.enabled", "false"), R("a.name", "yes"), R("a.port", "25565"),
                                     R("b.c.d", "x: y"), R("a.new", "1")])
    data = yaml.safe_load(new)
    assert data == {"a": {"enabled": False, "name": "yes", "port": 25565, "new": 1},
                    "list": [1, 2], "b": {"c": {"d": "x: y"}}}
    assert 'name: "yes"' in new  # quoted so it stays a string
    assert notes == ["b.c.d: added", "a.new: added"]


ARMA_JSON = """{
    "bindAddress": "",
    "bindPort": 2001,
    "publicAddress": "",
    "publicPort": 2001,
    "a2s": { "address": "0.0.0.0", "port": 17777 },
    "game": {
        "name": "Server",
        "password": "",
        "scenarioId": "{ECC61978EDCC2B5A}Missions/23_Campaign.conf",
        "maxPlayers": 32,
        "visible": true,
        "supportedPlatforms": ["PLATFORM_PC", "PLATFORM_XBL"],
        "gameProperties": {
            "serverMaxViewDistance": 2500,
            "disableThirdPerson": false,
            "battlEye": true
        },
        "mods": [
            {"modId": "59727DAE364DEADB", "name": "WeaponSwitching", "version": "1.0.1"},
            {"modId": "5965550F24A0C152", "name": "Where Am I", "version": "1.2.0"}
        ]
    }
}
"""


def test_json_arma_reforger_config_like_the_egg():
    egg_files = {"config.json": {"parser": "json", "find": {
        "bindAddress": "0.0.0.0",
        "bindPort": "{{server.build.default.port}}",
        "publicAddress": "{{server.build.default.ip}}",
        "game.name": "{{server.build.env.SERVER_NAME}}",
        "game.password": "{{server.build.env.SERVER_PASS}}",
        "game.maxPlayers": "{{server.build.env.MAX_PLAYERS}}",
        "game.visible": "{{server.build.env.VISIBLE}}",
        "game.gameProperties.fastValidation": True,
        "game.gameProperties.battlEye": "{{server.build.env.BATTLEYE}}",
        "game.mods.*.version": "",
        "game.supportedPlatforms.0": "PLATFORM_PSN",
    }}}
    env = {"SERVER_NAME": "My \"Arma\"", "SERVER_PASS": "1234", "MAX_PLAYERS": "64", "VISIBLE": "false",
           "BATTLEYE": "true"}
    new = _apply_text(egg_files, "config.json", ARMA_JSON, definition(env, port=2302, ip="10.0.0.5"))
    data = json.loads(new)
    assert data["bindAddress"] == "0.0.0.0" and data["bindPort"] == 2302 and data["publicAddress"] == "10.0.0.5"
    g = data["game"]
    assert g["name"] == 'My "Arma"' and g["password"] == "1234"  # a string stays a string
    assert g["maxPlayers"] == 64 and g["visible"] is False  # a number and a boolean stay so
    assert g["gameProperties"] == {"serverMaxViewDistance": 2500, "disableThirdPerson": False,
                                   "battlEye": True, "fastValidation": True}
    assert [m["version"] for m in g["mods"]] == ["", ""]
    assert g["supportedPlatforms"] == ["PLATFORM_PSN", "PLATFORM_XBL"]
    # formatting kept: the inline a2s object and key order are untouched
    assert '"a2s": { "address": "0.0.0.0", "port": 17777 },' in new
    assert list(data) == ["bindAddress", "bindPort", "publicAddress", "publicPort", "a2s", "game"]
    assert '            "battlEye": true,\n            "fastValidation": true\n' in new


def test_json_empty_file_comments_and_trailing_commas():
    new, _ = rewrite_json("", [R("a.b", "1"), R("c", "x")])
    assert json.loads(new) == {"a": {"b": 1}, "c": "x"}
    text = '{\n  // a comment\n  "a": 1,\n}\n'
    new, _ = rewrite_json(text, [R("a", "2"), R("b", "3")])
    assert "// a comment" in new and '"a": 2' in new and '"b": 3' in new


OPENTTD_CFG = """\
[misc]
display_opt = SHOW_TOWN_NAMES|SHOW_STATION_NAMES
; what the server says
[network]
server_port = 3979
server_name = Unnamed Server
lan_internet = 1
server_advertise = false
max_clients = 25

[gui]
autosave = monthly
"""


def test_ini_openttd_cfg_like_the_egg():
    egg_files = {"openttd.cfg": {"parser": "ini", "find": {
        "network.server_port": "{{server.allocations.default.port}}",
        "network.server_name": "{{server.environment.srv_name}}",
        "network.lan_internet": 0,
        "network.server_advertise": "{{server.environment.srv_advertise}}",
        "network.server_password": "{{env.PASSWORD}}",
        "autosave_interval.minutes": "10",
    }}}
    env = {"srv_name": "My OpenTTD\nserver_password = pwned", "srv_advertise": "true", "PASSWORD": "s3cret"}
    new = _apply_text(egg_files, "openttd.cfg", OPENTTD_CFG, definition(env, port=3980))
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str
    cp.read_string(new)
    net = cp["network"]
    assert net["server_port"] == "3980" and net["lan_internet"] == "0" and net["server_advertise"] == "true"
    assert net["server_name"] == "My OpenTTD server_password = pwned"  # kept on one line
    assert net["server_password"] == "s3cret" and net["max_clients"] == "25"
    assert cp["autosave_interval"]["minutes"] == "10"
    assert "; what the server says" in new and "display_opt = SHOW_TOWN_NAMES|SHOW_STATION_NAMES" in new
    assert new.index("server_password = s3cret") < new.index("[gui]")  # added inside its section


def test_ini_unreal_sections_with_dots_and_default_section():
    text = "[/Script/Astro.AstroServerSettings]\nPublicIP=1.2.3.4\nServerName=Old\n"
    new, _ = rewrite_ini(text, [R("[/Script/Astro.AstroServerSettings].ServerName", "New"),
                                R("[/Script/Astro.AstroServerSettings].PublicIP", "5.6.7.8"),
                                R("TopLevel", "1")])
    assert new == "TopLevel=1\n[/Script/Astro.AstroServerSettings]\nPublicIP=5.6.7.8\nServerName=New\n"


def test_ini_keeps_quotes_and_crlf():
    text = '[server]\r\nname = "old"\r\nport=1\r\n'
    new, _ = rewrite_ini(text, [R("server.name", 'say "hi"'), R("server.port", "2"), R("server.extra", "3")])
    assert new == '[server]\r\nname = "say \\"hi\\""\r\nport=2\r\nextra = 3\r\n'
    # eggs that bring their own quotes (OpenRCT2, rathole) are written as they are, every time
    again, _ = rewrite_ini(new, [R("server.name", '"quoted by the egg"')])
    assert again == rewrite_ini(again, [R("server.name", '"quoted by the egg"')])[0]
    assert 'name = "quoted by the egg"\r\n' in again


SE_CFG = b"""\xef\xbb\xbf<?xml version="1.0"?>
<MyConfigDedicated xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <!-- Space Engineers dedicated server -->
  <SessionSettings>
    <GameMode>Creative</GameMode>
    <MaxPlayers>4</MaxPlayers>
    <EnableSaving>false</EnableSaving>
    <AutoSaveInMinutes />
  </SessionSettings>
  <LoadWorld />
  <ServerPort>27016</ServerPort>
  <Administrators>
    <unsignedLong>76561198000000000</unsignedLong>
  </Administrators>
</MyConfigDedicated>
"""


def test_xml_space_engineers_cfg_like_the_egg():
    egg_files = {"config/SpaceEngineers-Dedicated.cfg": {"parser": "xml", "find": {
        "MyConfigDedicated.SessionSettings.GameMode": "{{server.build.env.SERVER_MODE}}",
        "MyConfigDedicated.SessionSettings.MaxPlayers": "{{server.build.env.MAX_PLAYERS}}",
        "MyConfigDedicated.SessionSettings.AutoSaveInMinutes": "{{server.build.env.SAVE_INTERVAL}}",
        "MyConfigDedicated.SessionSettings.EnableSaving": "{{server.build.env.SAVE_ENABLED}}",
        "MyConfigDedicated.LoadWorld": "Z:\\home\\container\\config\\Saves\\{{server.build.env.WORLD_NAME}}\\Sandbox.sbc",
        "MyConfigDedicated.ServerPort": "{{server.build.default.port}}",
        "MyConfigDedicated.ServerName": "{{server.build.env.SERVER_NAME}}",
        "MyConfigDedicated.RemoteApi": "[enabled='true']",
    }}}
    env = {"SERVER_MODE": "Survival", "MAX_PLAYERS": "8", "SAVE_INTERVAL": "5", "SAVE_ENABLED": "true",
           "WORLD_NAME": "World", "SERVER_NAME": "Tom & Jerry's <server>"}
    new = _apply_text(egg_files, "config/SpaceEngineers-Dedicated.cfg", SE_CFG, definition(env, port=27017),
                      binary=True)
    assert new.startswith(b"\xef\xbb\xbf<?xml")
    assert b"<!-- Space Engineers dedicated server -->" in new
    root = ET.fromstring(new[3:])
    ss = root.find("SessionSettings")
    assert ss.findtext("GameMode") == "Survival" and ss.findtext("MaxPlayers") == "8"
    assert ss.findtext("AutoSaveInMinutes") == "5" and ss.findtext("EnableSaving") == "true"
    assert root.findtext("LoadWorld") == "Z:\\home\\container\\config\\Saves\\World\\Sandbox.sbc"
    assert root.findtext("ServerPort") == "27017"
    assert root.findtext("ServerName") == "Tom & Jerry's <server>"
    assert root.find("RemoteApi").get("enabled") == "true"
    assert root.find("Administrators").findtext("unsignedLong") == "76561198000000000"
    assert b"\n  <ServerName>Tom &amp; Jerry's &lt;server&gt;</ServerName>" in new  # indented like its siblings


def test_xml_wildcards_attributes_and_missing_root():
    text = b'<root>\n  <a><port>1</port></a>\n  <b><port>2</port></b>\n</root>\n'
    new, _ = rewrite_xml(text, [R("root.*.port", "9"), R("root.a", "[name='x']")])
    assert new == b'<root>\n  <a name="x"><port>9</port></a>\n  <b><port>9</port></b>\n</root>\n'
    new, notes = rewrite_xml(text, [R("other.port", "1")])
    assert new == text and "root element is <root>" in notes[0]
    new, _ = rewrite_xml(b"", [R("server.port", "1")])
    assert ET.fromstring(new).findtext("port") == "1"


def test_file_parser_prefix_lines_keeps_everything_else():
    text = "# Rust server.cfg\r\nserver.hostname \"old\"\r\nserver.port 28015\r\nserver.portal 1\r\nfps.limit 60"
    new, _ = rewrite_file(text, [R("server.hostname", 'server.hostname "New"'), R("server.port", "server.port 28016"),
                                 R("server.portal", "server.portal 0")])
    # the longest prefix wins (Wings would write both values on `server.portal`)
    assert new == "# Rust server.cfg\r\nserver.hostname \"New\"\r\nserver.port 28016\r\nserver.portal 0\r\nfps.limit 60"


def test_file_parser_multiline_egg_values_and_single_line_variables(tmp_path):
    # the MongoDB eggs replace one line by two on purpose; a variable cannot add lines
    files = {"mongod.conf": {"parser": "file", "find": {
        "#security:": "security: \r\n  authorization: \"enabled\"",
        "  bindIp:": "  bindIp: {{env.BIND}}"}}}
    (tmp_path / "mongod.conf").write_text("net:\n  bindIp: 127.0.0.1\n#security:\n")
    res = apply_config_files(tmp_path, files, settings=definition({"BIND": "0.0.0.0\nevil: 1"}))
    assert [r.status for r in res] == ["updated"]
    assert (tmp_path / "mongod.conf").read_bytes() == \
        b"net:\n  bindIp: 0.0.0.0 evil: 1\nsecurity: \r\n  authorization: \"enabled\"\n"


# =============================================================================================
# Placeholders

def test_placeholder_forms_resolve_like_the_panel():
    d = definition({"SERVER_JARFILE": "server.jar", "QUERY_PORT": "27016", "FLAG": True}, port=25570, ip="10.1.1.1")
    s = placeholder_structure(d)
    env = s["environment"]
    sub = lambda t: substitute_placeholders(t, structure=s, environment=env, node_config=NODE)  # noqa: E731
    assert sub("{{server.build.default.port}}|{{server.allocations.default.port}}") == "25570|25570"
    assert sub("{{server.build.default.ip}}") == "10.1.1.1"
    assert sub("{{server.build.memory}}|{{server.build.memory_limit}}") == "1024|1024"
    assert sub("{{server.build.env.SERVER_JARFILE}}|{{env.SERVER_JARFILE}}|{{server.environment.SERVER_JARFILE}}") == \
        "server.jar|server.jar|server.jar"
    assert sub("{{env.SERVER_PORT}}|{{server.build.env.SERVER_MEMORY}}|{{env.SERVER_IP}}") == "25570|1024|10.1.1.1"
    assert sub("{{config.docker.interface}}|{{ config.docker.network.interface }}") == "172.18.0.1|172.18.0.1"
    assert sub("{{server.build.env.NOPE}}|{{server.nope}}|{{config.nope}}") == "||"  # missing → empty
    assert sub("{{QUERY_PORT}}|{{UNKNOWN}}|{{server.build.env.{X}}") == "27016|{{UNKNOWN}}|{{server.build.env.{X}}"
    assert sub("{{server.build.env.FLAG}}") == "true"


def test_render_configs_is_the_panels_half():
    files = {"server.properties": {"parser": "properties", "find": {
        "server-port": "{{server.build.default.port}}", "server-ip": "{{config.docker.interface}}",
        "motd": {"old": "{{env.MOTD}}"}}}}
    configs = configs_from_egg_files(files)
    assert configs == [{"parser": "properties", "file": "server.properties", "replace": [
        {"match": "server-port", "replace_with": "{{server.build.default.port}}"},
        {"match": "server-ip", "replace_with": "{{config.docker.interface}}"},
        {"match": "motd", "if_value": "old", "replace_with": "{{env.MOTD}}"}]}]
    rendered = render_configs(configs, definition({"MOTD": "hi"}))
    assert [r["replace_with"] for r in rendered[0]["replace"]] == ["25565", "{{config.docker.interface}}", "hi"]
    files_, problems = parse_configs(rendered)
    assert problems == [] and files_[0].replace[2].if_value == "old"


def test_bad_config_entries_are_reported_not_fatal(tmp_path):
    res = apply_config_files(tmp_path, [{"file": "a.toml", "parser": "toml", "replace": []},
                                        {"file": "b.properties", "parser": "properties",
                                         "replace": [{"match": "k", "value": "v"}, {"nomatch": 1}]}],
                             settings=definition())
    assert res[0].status == "error" and "unknown parser" in res[0].detail
    assert res[1].status == "error" and "replace[1]" in res[1].detail
    assert res[2].status == "created" and (tmp_path / "b.properties").read_text() == "k=v\n"


name = st.from_regex(r"[A-Z][A-Z0-9_]{0,15}", fullmatch=True)
plain = st.text(alphabet=st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)), max_size=30)
anyvalue = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


@FAST
@given(text=plain)
def test_text_without_placeholders_is_unchanged(text):
    assert substitute_placeholders(text, structure={}, environment={"A": "b"}, node_config=NODE) == text


@FAST
@given(var=name, value=anyvalue, before=plain, after=plain,
       form=st.sampled_from(["{{server.build.env.%s}}", "{{env.%s}}", "{{server.environment.%s}}", "{{ env.%s }}", "{{%s}}"]))
def test_every_variable_form_gives_the_value_once(var, value, before, after, form):
    if var in ("SERVER_MEMORY", "SERVER_IP", "SERVER_PORT"):
        return
    d = definition({var: value})
    s = placeholder_structure(d)
    out = substitute_placeholders(before + form % var + after, structure=s, environment=s["environment"])
    assert out == before + value + after  # values are not expanded again, even if they hold {{…}}


@FAST
@given(var=name, value=anyvalue)
def test_single_line_substitution_never_adds_lines(var, value):
    out = substitute_placeholders("k={{env.%s}}" % var, environment={var: value}, single_line=True)
    assert "\n" not in out and "\r" not in out


@FAST
@given(port=st.integers(1, 65535), ip=st.ip_addresses(v=4).map(str), memory=st.integers(0, 10**6))
def test_server_values(port, ip, memory):
    s = placeholder_structure(definition(port=port, ip=ip, memory=memory))
    out = substitute_placeholders("{{server.build.default.ip}}:{{server.build.default.port}}/{{server.build.memory}}",
                                  structure=s, environment=s["environment"])
    assert out == f"{ip}:{port}/{memory}"


# =============================================================================================
# Property tests of the rewriters against independent readers

keys = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8)
scalars = st.one_of(st.integers(-1000, 1000), st.booleans(), st.text(alphabet=string.ascii_letters + " :#-'\"", max_size=12))
docs = st.recursive(st.dictionaries(keys, scalars, min_size=1, max_size=4),
                    lambda inner: st.dictionaries(keys, st.one_of(scalars, inner), min_size=1, max_size=4), max_leaves=12)


def _paths(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def _set(d, path, value):
    for k in path[:-1]:
        d = d.setdefault(k, {})
    d[path[-1]] = value


def _expected(old, value):
    """What roost writes: the type already in the file is kept where the value allows it."""
    if isinstance(old, bool):
        return value.lower() == "true" if value.lower() in ("true", "false") else value
    if isinstance(old, int) and re.fullmatch(r"[+-]?[0-9]+", value):
        return int(value)
    if isinstance(old, int) and re.fullmatch(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", value):
        return float(value)
    return value


new_values = st.one_of(st.integers(-99, 99).map(str), st.sampled_from(["true", "false", "yes", "null", "a: b", "# x", ""]),
                       st.text(alphabet=string.printable.strip() + " é", max_size=10))


@FAST
@given(doc=docs, data=st.data(), value=new_values, indent=st.sampled_from([2, 4]))
def test_json_rewrite_sets_exactly_one_value(doc, data, value, indent):
    path, old = data.draw(st.sampled_from(list(_paths(doc))))
    text = json.dumps(doc, indent=indent)
    new, _ = rewrite_json(text, [R(".".join(path), value)])
    expected = json.loads(text)
    _set(expected, path, _expected(old, value))
    assert json.loads(new) == expected


@FAST
@given(doc=docs, data=st.data(), value=new_values, missing=keys)
def test_yaml_rewrite_sets_exactly_one_value(doc, data, value, missing):
    path, old = data.draw(st.sampled_from(list(_paths(doc))))
    text = "# header comment\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    new, _ = rewrite_yaml(text, [R(".".join(path), value)])
    expected = yaml.safe_load(text)
    _set(expected, path, _expected(old, value))
    assert yaml.safe_load(new) == expected and new.startswith("# header comment\n")
    # a missing key is added
    if missing not in doc:
        new2, _ = rewrite_yaml(new, [R(missing, value)])
        got = yaml.safe_load(new2)
        assert got[missing] == (int(value) if re.fullmatch(r"[+-]?[0-9]+", value) else value)


prop_keys = st.text(alphabet=string.ascii_letters + string.digits + ".-_ =:", min_size=1, max_size=12).filter(lambda k: k.strip() == k)
prop_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)


@FAST
@given(entries=st.dictionaries(prop_keys, prop_values, min_size=1, max_size=5), data=st.data(), value=prop_values)
def test_properties_rewrite_reads_back(entries, data, value):
    from roost.server.configfiles import _prop_entries, _prop_escape

    text = "# comment\n" + "".join(f"{_prop_escape(k, key=True)}={_prop_escape(v)}\n" for k, v in entries.items())
    key = data.draw(st.sampled_from(list(entries)))
    new, _ = rewrite_properties(text, [R(key, value)])
    got = {e.key: e.raw_value for e in _prop_entries(new)}
    assert got == {**entries, key: value}
    assert new.startswith("# comment\n") and new.count("\n") == text.count("\n")


ini_words = st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=8)


@FAST
@given(sections=st.dictionaries(ini_words, st.dictionaries(ini_words, ini_words, min_size=1, max_size=4), min_size=1, max_size=3),
       data=st.data(), value=st.text(alphabet=string.ascii_letters + " ./", max_size=12).map(str.strip), new_key=ini_words)
def test_ini_rewrite_reads_back(sections, data, value, new_key):
    text = "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) + "\n" for s, kv in sections.items())
    sec = data.draw(st.sampled_from(list(sections)))
    key = data.draw(st.sampled_from(list(sections[sec])))
    new, _ = rewrite_ini(text, [R(f"{sec}.{key}", value), R(f"{sec}.{new_key}", "added")])
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read_string(new)
    expected = {s: dict(kv) for s, kv in sections.items()}
    expected[sec][key] = value
    # set when present (games read INI case-insensitively: an exact match first), added when not
    target = new_key if new_key in expected[sec] else \
        next((k for k in expected[sec] if k.lower() == new_key.lower()), new_key)
    expected[sec][target] = "added"
    assert {s: dict(cp[s]) for s in cp.sections()} == expected


@FAST
@given(value=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20))
def test_xml_rewrite_reads_back(value):
    new, _ = rewrite_xml(b"<a>\n  <b>old</b>\n</a>\n", [R("a.b", value), R("a.c.d", value)])
    root = ET.fromstring(new)
    assert (root.findtext("b") or "") == value and (root.find("c").findtext("d") or "") == value


# =============================================================================================
# Files on disk

def _apply_text(egg_files, name, content, d, binary=False):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp, name)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if binary else content.encode())
        res = apply_config_files(tmp, egg_files, settings=d, node_config=NODE)
        assert [r.status for r in res] == ["updated"], res
        return p.read_bytes() if binary else p.read_text()


def test_rewrites_are_atomic_and_keep_mode_and_owner(tmp_path):
    p = tmp_path / "server.properties"
    p.write_text(SERVER_PROPERTIES)
    os.chmod(p, 0o640)
    if os.geteuid() == 0:
        os.chown(p, 1234, 2345)
    before = p.stat()
    res = apply_config_files(tmp_path, {"server.properties": {"parser": "properties", "find": {
        "server-port": "{{server.build.default.port}}"}}}, settings=definition(port=25599))
    assert res[0].status == "updated"
    after = p.stat()
    assert stat.S_IMODE(after.st_mode) == 0o640 and (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert after.st_ino != before.st_ino  # replaced by rename, not rewritten in place
    assert "server-port=25599" in p.read_text()
    assert sorted(os.listdir(tmp_path)) == ["server.properties"]  # no temporary file left
    res = apply_config_files(tmp_path, {"server.properties": {"parser": "properties", "find": {
        "server-port": "{{server.build.default.port}}"}}}, settings=definition(port=25599))
    assert res[0].status == "unchanged" and p.stat().st_ino == after.st_ino


def test_missing_files_are_created_except_for_the_file_parser(tmp_path):
    if os.geteuid() == 0:
        os.chown(tmp_path, 1234, 2345)
    files = {"/config/new.yml": {"parser": "yaml", "find": {"a.b": "1"}},
             "plain.txt": {"parser": "file", "find": {"x": "y"}}}
    res = apply_config_files(tmp_path, files, settings=definition())
    assert [r.status for r in res] == ["created", "skipped"]
    created = tmp_path / "config" / "new.yml"
    assert yaml.safe_load(created.read_text()) == {"a": {"b": 1}}
    assert stat.S_IMODE(created.stat().st_mode) == 0o644
    if os.geteuid() == 0:
        assert (created.stat().st_uid, (tmp_path / "config").stat().st_uid) == (1234, 1234)


@pytest.mark.parametrize("name", ["../escape.properties", "a/../../escape.properties", "..", "/", ""])
def test_paths_outside_the_data_directory_are_refused(tmp_path, name):
    data = tmp_path / "data"
    data.mkdir()
    res = apply_config_files(data, [{"file": name, "parser": "properties", "replace": [{"match": "a", "replace_with": "b"}]}],
                             settings=definition())
    assert res[0].status == "error"
    assert not (tmp_path / "escape.properties").exists()


def test_a_leading_slash_means_the_data_directory_root(tmp_path):
    res = apply_config_files(tmp_path, {"/properties/server.properties": {"parser": "properties", "find": {"a": "b"}}},
                             settings=definition())
    assert res[0].status == "created" and (tmp_path / "properties" / "server.properties").read_text() == "a=b\n"


def test_symlinks_may_not_escape(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    (outside / "secret.properties").write_text("a=1\n")
    (data / "dirlink").symlink_to(outside)
    (data / "filelink.properties").symlink_to(outside / "secret.properties")
    (data / "real").mkdir()
    (data / "real" / "x.properties").write_text("a=1\n")
    (data / "inside").symlink_to(data / "real")
    res = apply_config_files(data, [
        {"file": "dirlink/secret.properties", "parser": "properties", "replace": [{"match": "a", "replace_with": "2"}]},
        {"file": "filelink.properties", "parser": "properties", "replace": [{"match": "a", "replace_with": "2"}]},
        {"file": "dirlink/new.properties", "parser": "properties", "replace": [{"match": "a", "replace_with": "2"}]},
        {"file": "inside/x.properties", "parser": "properties", "replace": [{"match": "a", "replace_with": "2"}]},
    ], settings=definition())
    assert [r.status for r in res] == ["error", "error", "error", "updated"]
    assert "outside the data directory" in res[0].detail
    assert (outside / "secret.properties").read_text() == "a=1\n" and not (outside / "new.properties").exists()
    assert (data / "real" / "x.properties").read_text() == "a=2\n"
    assert (data / "inside").is_symlink()


def test_one_bad_file_does_not_stop_the_others(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "fifo.yml").unlink(missing_ok=True)
    os.mkfifo(tmp_path / "fifo.yml")
    res = apply_config_files(tmp_path, {
        "broken.json": {"parser": "json", "find": {"a": "1"}},
        "fifo.yml": {"parser": "yaml", "find": {"a": "1"}},
        "ok.json": {"parser": "json", "find": {"a": "1"}},
    }, settings=definition())
    assert [r.status for r in res] == ["error", "error", "created"]
    assert "invalid JSON" in res[0].detail and "not a regular file" in res[1].detail
    assert (tmp_path / "broken.json").read_text() == "{not json"


def test_rewrite_dispatch_keeps_a_bom_and_invalid_utf8():
    data = b"\xef\xbb\xbfa=1\nb=\xff\n"
    new, _ = rewrite("properties", data, [R("a", "2")])
    assert new == b"\xef\xbb\xbfa=2\nb=\xff\n"


def test_definition_round_trip_through_the_model():
    d = ServerDefinition.model_validate(definition({"X": "1"}))
    s = placeholder_structure(d)
    assert s["build"]["default"]["port"] == 25565 and s["build"]["env"]["X"] == "1"
    assert s["allocations"]["mappings"] == {"0.0.0.0": [25565, 25566]}
