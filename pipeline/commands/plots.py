"""``python -m pipeline plots show | diff [REV...]``: DVC's plots page, drawn without a network.

DVC's page loads vega, vega-lite and vega-embed from a CDN, so offline (or behind a proxy) it is
blank. This command runs ``dvc plots show`` or ``dvc plots diff`` with an ``--html-template`` that
inlines them, from ``vl-convert-python``'s bundle: the same plots, titles and revisions as DVC's,
in ``dvc_plots/index.html`` by default. A plot that dvc.yaml declares and no revision has data for
(its files missing) is an error naming it. From any folder of the project, it draws the project's
plots. Never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pipeline.commands.project import enter_project, open_project
from pipeline.core.errors import PipelineError

DEFAULT_OUT = Path("dvc_plots")
VEGA_LITE_MAJOR = "5"  # DVC's templates (its built-in and .dvc/plots/) are vega-lite v5 specs
_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>DVC plots</title>
<script>
{bundle}
</script>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


class PlotsError(PipelineError):
    """DVC could not render the plots (an unknown revision, no plots)."""


def offline_page() -> str:
    """An HTML template for ``dvc plots --html-template``: vega, vega-lite and vega-embed inlined."""
    import vl_convert

    versions = [v for v in vl_convert.get_vegalite_versions() if v.split(".")[0] == VEGA_LITE_MAJOR]
    latest = max(versions, key=lambda version: tuple(int(part) for part in version.split(".")))
    bundle = vl_convert.javascript_bundle(vl_version=latest)
    if "</script" in bundle.lower():  # would end the inline script early
        raise PlotsError(f"vl-convert-python's bundle for vega-lite {latest} cannot be inlined")
    return _PAGE.format(bundle=bundle)


def render(revisions: Sequence[str] | None, out: Path = DEFAULT_OUT) -> Path:
    """``dvc plots show`` (``revisions`` None) or ``dvc plots diff *revisions`` into ``out``; the page."""
    from dvc.cli import main as dvc

    command = ["plots", "show"] if revisions is None else ["plots", "diff", *revisions]
    with tempfile.TemporaryDirectory(prefix="fashion-plots-") as directory:
        template = Path(directory) / "offline.html"
        template.write_text(offline_page(), encoding="utf-8")
        # DVC prints the page's URL, or its error in one line: its records stay off the stage
        # log's handlers, which would print DVC's tracebacks too.
        dvc_logger = logging.getLogger("dvc")
        propagate, dvc_logger.propagate = dvc_logger.propagate, False
        try:
            status = dvc([*command, "--html-template", str(template), "--out", str(out)])
        finally:
            dvc_logger.propagate = propagate
    if status != 0:
        raise PlotsError(f"`dvc {' '.join(command)}` failed (its message is above)")
    page = out / "index.html"
    if not page.is_file():  # DVC found no plots at all: it says so and exits 0
        raise PlotsError("no plots to draw: run `dvc repro` first (dvc.yaml's plots read its outputs)")
    if undrawn := undrawn_plots(revisions):  # DVC draws the others, warns, and exits 0
        raise PlotsError(
            f"{page} lacks plots that dvc.yaml declares, their files missing in every revision shown: "
            f"{', '.join(undrawn)}; run `dvc repro` (or `python -m pipeline restore STAGE`) first"
        )
    return page


def undrawn_plots(revisions: Sequence[str] | None) -> list[str]:
    """The plots of dvc.yaml that no revision has data for, as ``render`` draws them (``None``: the
    workspace)."""
    from dvc.render.match import match_defs_renderers
    from dvc.repo.plots.diff import diff

    # DVC's warning of the plots it failed to load is on stderr once already, from `dvc plots`.
    with open_project(Path.cwd()) as repo, contextlib.redirect_stderr(io.StringIO()):
        data = repo.plots.show() if revisions is None else diff(repo, revs=list(revisions))
    renderers = [found.renderer for found in match_defs_renderers(data)]
    drawn = [renderer.name for renderer in renderers if renderer.datapoints]
    # A folder of images is one plot per file where it exists, and one empty plot where it does not.
    return [
        renderer.name
        for renderer in renderers
        if not renderer.datapoints and not any(name.startswith(f"{renderer.name}/") for name in drawn)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.commands import run_command

    parser = argparse.ArgumentParser(
        prog="python -m pipeline plots",
        description="DVC's plots page, drawn offline: runs dvc plots show/diff with vega inlined, so "
        "dvc_plots/index.html needs no network.",
    )
    parser.add_argument("action", choices=("show", "diff"), help="as `dvc plots show` or `dvc plots diff`")
    parser.add_argument("revisions", nargs="*", metavar="REV", help="diff: git revisions (default: HEAD)")
    parser.add_argument("-o", "--out", type=Path, help="folder (default: the project's dvc_plots)")
    args = parser.parse_args(argv)
    if args.action == "show" and args.revisions:
        parser.error("plots show takes no revisions; compare them with `plots diff REV...`")

    def draw() -> int:
        (out,) = enter_project(args.out)  # dvc.yaml's plots name their files from the project's root
        render(None if args.action == "show" else args.revisions, out or DEFAULT_OUT)
        return 0

    return run_command("plots", draw)


if __name__ == "__main__":
    raise SystemExit(main())
