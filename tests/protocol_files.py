"""What PROTOCOL.md's "## Stages" section says each stage writes, checked against a committed stage directory."""

import re
from pathlib import Path

PROTOCOL = Path(__file__).resolve().parents[1] / "storage" / "PROTOCOL.md"


def listed_files(stage: str) -> list[str]:
    """The file names a stage's section opens its bullets with (`part-NNNNN.parquet`, `adapter/`, ...), less
    the ones named as removed before the commit (checkpoints, the data-parallel job files)."""
    stages = PROTOCOL.read_text().split("\n## Stages", 1)[1].split("\n## ", 1)[0]
    section = stages.split(f"\n### {stage}\n", 1)[1].split("\n### ", 1)[0]
    names = []
    for line in section.splitlines():
        if m := re.match(r"- `([^`]+)`(?:, `([^`]+)`)?", line):
            names += [n for n in m.groups() if n and re.search(r"\.\w+$|/$", n)]  # files and folders, not rules
    return names


def assert_files_match_protocol(manifest) -> None:
    """Every file the manifest lists is one PROTOCOL names for its stage, and every name PROTOCOL gives is there
    (a pattern like part-NNNNN at least once; a folder, `adapter/`, as files under it)."""
    listed = listed_files(manifest.stage)
    assert listed, f"PROTOCOL.md names no files for stage {manifest.stage!r}"
    patterns = {name: re.compile(re.escape(name).replace("NNNNN", r"\d{5}") + ("" if name.endswith("/") else "$"))
                for name in listed}
    written = [f.path for f in manifest.files]
    unlisted = [p for p in written if not any(rx.match(p) for rx in patterns.values())]
    missing = [name for name, rx in patterns.items() if not any(rx.match(p) for p in written)]
    assert not unlisted and not missing, (f"{manifest.stage}: files PROTOCOL.md does not name {unlisted}; "
                                          f"named but not written {missing}")
