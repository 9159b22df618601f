"""Runs the real `gateway` command line with the stub handler of mllp_support in place of
make_handler (which waits for the ingest service): how the tests start `gateway mllp` as a process."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway.cli import main  # noqa: E402
from gateway.mllp import handler  # noqa: E402
from mllp_support import EchoAck  # noqa: E402

handler.make_handler = lambda settings, client_id, mapping: EchoAck()  # type: ignore[assignment]
main()
