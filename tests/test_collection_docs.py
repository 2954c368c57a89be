"""What Galaxy shows of the collection agrees with the code: every filter documented, one
ansible-core floor, and a CHANGELOG.md rendered from changelogs/.

Galaxy's importer runs ansible-doc on every plugin and logs "Missing documentation" for a filter
without a doc file. A filter's doc lives beside the Python that defines it, as
plugins/filter/<filter name>.yml (the form ansible-core uses for its own filters), so a filter
added, renamed or given another argument without its doc fails here.
"""

import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from support import REPO, ROLE

FILTERS = REPO / "plugins" / "filter"
COLLECTION = "asgi.gunicorn"


def defined_filters():
    """{filter name: function} of every FilterModule in plugins/filter/*.py, as Ansible loads them."""
    found = {}
    for path in sorted(FILTERS.glob("*.py")):
        module = importlib.import_module(f"ansible_collections.asgi.gunicorn.plugins.filter.{path.stem}")
        for name, function in module.FilterModule().filters().items():
            assert name not in found, f"{name} is defined twice, the second time in {path.name}"
            found[name] = function
    return found


def doc_files():
    """{file name: its DOCUMENTATION} of the filter doc files."""
    return {path.name: yaml.safe_load(path.read_text())["DOCUMENTATION"]
            for path in sorted(FILTERS.glob("*.yml"))}


def run(program, *args):
    """A tool of the project's virtualenv, with the repository's Ansible settings (which find the
    collection through its link under .ansible/collections); its output, once it succeeded quietly."""
    path = Path(sys.executable).with_name(program)
    result = subprocess.run(
        [str(path) if path.exists() else shutil.which(program), *args],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "NO_COLOR": "1"})
    assert result.returncode == 0 and not result.stderr.strip(), (
        f"{program} {' '.join(args)}: rc {result.returncode}\n{result.stdout}{result.stderr}")
    return result.stdout


def ansible_doc(*args):
    return run("ansible-doc", "-t", "filter", *args)


def test_ansible_doc_lists_every_filter_with_its_description():
    listed = json.loads(ansible_doc("-l", COLLECTION, "--json"))
    print("\n" + "\n".join(f"{name}: {description}" for name, description in sorted(listed.items())))
    assert set(listed) == {f"{COLLECTION}.{name}" for name in defined_filters()}
    undocumented = sorted(name for name, description in listed.items()
                          if not description or description == "UNDOCUMENTED")
    assert not undocumented, f"no doc file for {undocumented}: add plugins/filter/<filter name>.yml"


def test_ansible_doc_shows_each_filter():
    names = sorted(defined_filters())
    shown = json.loads(ansible_doc("--json", *(f"{COLLECTION}.{name}" for name in names)))
    assert set(shown) == {f"{COLLECTION}.{name}" for name in names}
    for name in names:
        plugin = shown[f"{COLLECTION}.{name}"]
        assert plugin["doc"]["name"] == name
        assert Path(plugin["doc"]["filename"]).name == f"{name}.yml"
        assert plugin["doc"]["short_description"] and plugin["doc"]["description"], name
        assert f"asgi.gunicorn.{name}" in plugin["examples"], f"{name}'s EXAMPLES do not use it"
        assert plugin["return"]["_value"]["description"], name


def test_every_doc_file_names_a_filter_that_exists():
    filters = defined_filters()
    for file_name, doc in doc_files().items():
        assert doc["name"] == Path(file_name).stem, f"{file_name} documents {doc['name']}"
        assert doc["name"] in filters, (
            f"plugins/filter/{file_name} documents {doc['name']}, which no FilterModule defines "
            f"(they define {sorted(filters)}): rename or remove the file")


def test_each_doc_names_the_arguments_its_filter_takes():
    """The input is the filter's first argument, and every option another one of its parameters
    (required exactly when the parameter has no default), in the order the positional list says."""
    docs = {doc["name"]: doc for doc in doc_files().values()}
    for name, function in defined_filters().items():
        parameters = list(inspect.signature(function).parameters.values())
        options = docs[name]["options"]
        assert options["_input"].get("required"), name
        assert set(options) - {"_input"} == {parameter.name for parameter in parameters[1:]}, name
        for parameter in parameters[1:]:
            required = parameter.default is inspect.Parameter.empty
            assert bool(options[parameter.name].get("required")) == required, f"{name}: {parameter.name}"
        positional = [part.strip() for part in docs[name].get("positional", "_input").split(",")]
        assert positional == ["_input"] + [parameter.name for parameter in parameters[1:len(positional)]], name


def test_the_ansible_core_floor_is_the_tested_one_everywhere():
    """meta/runtime.yml, the role's meta and the READMEs name one floor: the ansible-core the tests run."""
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())["requires_ansible"]
    role = yaml.safe_load((ROLE / "meta" / "main.yml").read_text())["galaxy_info"]["min_ansible_version"]
    readmes = {page: re.findall(r"ansible-core (\d+\.\d+) or later", (REPO / page).read_text())
               for page in ("README.md", "roles/asgi_app/README.md")}
    print(f"\nrequires_ansible {runtime!r}, min_ansible_version {role!r}, {readmes}")
    floor = re.fullmatch(r">=(\d+\.\d+)\.0", runtime)
    assert floor, f"meta/runtime.yml's requires_ansible is {runtime!r}: write it as '>=X.Y.0'"
    assert str(role) == floor.group(1), "roles/asgi_app/meta/main.yml's min_ansible_version differs"
    for page, found in readmes.items():
        assert found == [floor.group(1)], f"{page}'s 'ansible-core X.Y or later' differs from {runtime}"
    from ansible.release import __version__ as tested
    assert tested.startswith(floor.group(1) + "."), (
        f"the tests run ansible-core {tested}, but the collection claims {runtime}: move the floor "
        "to what requirements.txt installs")


def test_changelog_fragments_are_valid_and_changelog_md_is_rendered_from_them(tmp_path):
    """CHANGELOG.md is antsibull-changelog's rendering of changelogs/changelog.yaml: a change is a
    fragment in changelogs/fragments/ (CONTRIBUTING.md), never an edit of CHANGELOG.md."""
    run("antsibull-changelog", "lint")
    rendered = tmp_path / "CHANGELOG.md"
    run("antsibull-changelog", "generate", "--output", str(rendered), "--output-format", "md")
    assert (REPO / "CHANGELOG.md").read_text() == rendered.read_text(), (
        "CHANGELOG.md differs from changelogs/: add a fragment and run antsibull-changelog generate")


# Markdown a user reads on Galaxy (it ships in the tarball), and the developer notes beside it.
SHIPPED_PAGES = ["README.md", "roles/asgi_app/README.md", *(path.relative_to(REPO).as_posix()
                                                          for path in sorted((REPO / "docs").rglob("*.md")))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchors(markdown):
    """The anchors GitHub and Galaxy give a page's headings: lower case, punctuation dropped,
    spaces as dashes."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", markdown, re.M)}


def test_links_between_the_pages_lead_somewhere_that_ships():
    """A relative link leads to a file (and heading) of the repository; from a page that ships, to
    one that ships too, so that it works on Galaxy. CONTRIBUTING.md stays in the repository, so
    the README links to it by its address."""
    ignored = yaml.safe_load((REPO / "galaxy.yml").read_text())["build_ignore"]
    for page in [*SHIPPED_PAGES, "CONTRIBUTING.md"]:
        for target in LINK.findall((REPO / page).read_text()):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (REPO / page).parent / path if path else REPO / page
            assert resolved.exists(), f"{page} links to {target}, which does not exist"
            if anchor:
                assert anchor in heading_anchors(resolved.read_text()), f"{page} links to {target}: no such heading"
            if page in SHIPPED_PAGES:
                relative = resolved.resolve().relative_to(REPO).as_posix()
                assert not any(relative == pattern or relative.startswith(pattern + "/") for pattern in ignored), (
                    f"{page} ships, but links to {target}, which galaxy.yml's build_ignore leaves out")
