"""The holder must stay dependency-free: it outlives daemon upgrades and venv changes."""
import json
import subprocess
import sys

ALLOWED_ROOST = {"roost", "roost.runtimes", "roost.runtimes.process",
                 "roost.runtimes.process.holder", "roost.runtimes.process.holder_wire"}


def test_holder_imports_only_the_stdlib_and_its_wire_module():
    code = ("import sys, json; import roost.runtimes.process.holder; "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    modules = json.loads(out)
    roost_modules = {m for m in modules if m == "roost" or m.startswith("roost.")}
    assert roost_modules <= ALLOWED_ROOST
    third_party = {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - {
        "roost", "__main__", "_distutils_hack", "sitecustomize", "usercustomize"}
    # The editable install's import hook is not something the holder imports.
    third_party = {m for m in third_party if not m.startswith("__editable__")}
    assert not third_party
