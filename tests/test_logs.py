"""The stage log: TensorFlow's start-up notices dropped, everything else kept; progress travels with
a record to the flow."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

from pipeline.core import logs

START_UP_NOTICES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795621358.914495   20231 port.cc:153] oneDNN custom operations are on. You may see "
    "slightly different numerical results due to floating-point round-off errors.\n"
)


def test_start_up_notices_are_dropped_and_every_other_line_kept_in_order() -> None:
    """What a C++ library writes to file descriptor 2 during the import, as TensorFlow's does."""
    code = textwrap.dedent(
        f"""
        import os, sys
        from pipeline.core import logs
        with logs.native_start_up_lines_dropped():
            os.write(2, {START_UP_NOTICES.encode()!r})
            os.write(2, b"E0000 00:00:1.0 1 some.cc:1] a real error\\n")
            print("a Python warning", file=sys.stderr)
            os.write(2, {START_UP_NOTICES.encode()!r})
        print("after", file=sys.stderr)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stderr == "E0000 00:00:1.0 1 some.cc:1] a real error\na Python warning\nafter\n"


def test_an_import_that_fails_still_shows_its_error() -> None:
    code = textwrap.dedent(
        """
        from pipeline.core import logs
        with logs.native_start_up_lines_dropped():
            import no_such_module_here
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in result.stderr


def test_a_record_carries_its_progress_through_the_socket_encoding() -> None:
    record = logging.LogRecord("pipeline.stages.train", logging.INFO, __file__, 1, "epoch 3/20", (), None)
    record.progress = logs.Progress(3, 20, "epoch 3 of 20, val_accuracy 0.8512")
    line = logs.decode(logs.encode(record, record.getMessage()))
    assert line == logs.Line(logging.INFO, "pipeline.stages.train", "epoch 3/20", record.progress)
    plain = logging.LogRecord("pipeline.stages.train", logging.INFO, __file__, 1, "best epoch", (), None)
    assert logs.decode(logs.encode(plain, "best epoch")).progress is None
    assert logs.progress(1, 2, "x") == {"progress": logs.Progress(1, 2, "x")}
