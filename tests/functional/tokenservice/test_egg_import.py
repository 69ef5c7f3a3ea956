"""`roost egg import`: a real public egg becomes a server definition / a server in the store."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

EGG = Path(__file__).resolve().parents[4] / "shared" / "eggs" / "minecraft" / "java__paper__pterodactyl-egg-paper.json"

pytestmark = pytest.mark.skipif(not EGG.exists(), reason="../shared/eggs is not there")


def roost(*args, home):
    return subprocess.run([sys.executable, "-m", "roost", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=60)


def test_egg_becomes_a_definition_and_a_server(tmp_path):
    r = roost("egg", "import", str(EGG), "--definition-only", "--port", "25570", "--memory", "1024", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["settings"]["invocation"].startswith("java ")
    assert doc["settings"]["allocations"]["default"]["port"] == 25570
    assert doc["settings"]["environment"]["SERVER_JARFILE"] == "server.jar"
    assert doc["process_configuration"]["startup"]["done"]
    assert roost("node", "add", "local", "--url", "http://127.0.0.1:9", home=tmp_path).returncode == 0
    assert roost("user", "create", "admin", "--admin", home=tmp_path).returncode == 0
    r = roost("egg", "import", str(EGG), "--no-notify", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    assert created["egg"] == "Paper"
    listed = json.loads(roost("server", "list", "--json", home=tmp_path).stdout)
    assert [s["identifier"] for s in listed] == [created["identifier"]]


def test_invalid_variable_is_refused_naming_the_variable_and_rule(tmp_path):
    r = roost("egg", "import", str(EGG), "--definition-only", "--env", "SERVER_JARFILE=", home=tmp_path)
    assert r.returncode == 1
    assert "SERVER_JARFILE" in r.stderr and "required" in r.stderr
    r = roost("egg", "import", "/etc/hostname", "--definition-only", home=tmp_path)
    assert r.returncode == 1 and "egg refused" in r.stderr
