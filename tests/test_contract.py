"""The repository agrees with itself: role defaults vs argument specs, demo host vs Molecule host."""

import re

import yaml

from support import REPO, ROLE, debian_releases_under_test, load_module


def test_defaults_and_argument_specs_agree():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    options = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())[
        "argument_specs"]["main"]["options"]
    required = {name for name, spec in options.items() if spec.get("required")}
    assert set(defaults) == set(options) - required
    for name, value in defaults.items():
        assert options[name].get("default") == value, name
        assert options[name].get("description"), name
    assert required == {"asgi_app_name", "asgi_app_module"}


def test_every_public_variable_has_a_comment_in_defaults():
    lines = (ROLE / "defaults" / "main.yml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^asgi_app_\w+:", line):
            assert lines[number - 1].startswith("# "), f"no comment above {line!r}"


def test_demo_host_uses_the_molecule_host_options():
    platform = yaml.safe_load((REPO / ".config" / "molecule" / "config.yml").read_text())[
        "platforms"][0]
    script = (REPO / "tools" / "test-host.sh").read_text()
    expected = (
        [f"--cap-add {cap}" for cap in platform["capabilities"]]
        + [f"--security-opt {opt}" for opt in platform["security_opts"]]
        + [f"--cgroupns {platform['cgroupns_mode']}"]
        + [f"--volume {volume}" for volume in platform["volumes"]]
        + [f"--tmpfs {path}" for path in platform["tmpfs"]]
        + [f"--env {key}={value}" for key, value in platform["env"].items()]
    )
    for option in expected:
        assert option in script, f"tools/test-host.sh lacks {option!r}"
    assert f'"$image" {platform["command"]}' in script


def test_readme_variables_table_matches_the_specs():
    module = load_module("readme_variables", REPO / "tools" / "readme_variables.py")
    readme = (REPO / "README.md").read_text()
    assert module.readme_with_table(readme) == readme, (
        "README.md's variables table is out of date: run python tools/readme_variables.py --write")


def test_reference_files_match_the_role():
    module = load_module("render_role", REPO / "tools" / "render_role.py")
    for name, content in module.reference_files().items():
        committed = REPO / "reference" / name
        assert committed.is_file() and committed.read_text() == content, (
            f"reference/{name} drifted from the role: run python tools/render_role.py --write")


def test_meta_lists_exactly_the_debian_releases_under_test():
    releases = debian_releases_under_test()
    assert list(releases) == ["12", "13"]
    platforms = yaml.safe_load((ROLE / "meta" / "main.yml").read_text())["galaxy_info"]["platforms"]
    assert platforms == [{"name": "Debian", "versions": list(releases.values())}], (
        "roles/asgi_app/meta/main.yml's platforms differ from the Makefile's DEBIAN_RELEASES")
