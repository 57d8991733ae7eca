# Launches moto_server for the Go test tier (internal/testkit/motoserver).
#
# Certificate ids must be the hex SHA-256 of the DER, as in AWS IoT. moto only
# computes them so when default_user_config["iot"]["use_valid_cert"] is set
# before the server starts, which moto_server's command line cannot do.
#
# The server also exits when its standard input closes, so that a test binary
# that dies without running its cleanups does not leave it running.
import os
import sys
import threading

try:
    from moto.core.config import default_user_config
    import moto.server
except ImportError as exc:  # moto is not installed for this python
    sys.stderr.write("MOTO_IMPORT_ERROR: %s\n" % exc)
    sys.stderr.flush()
    sys.exit(3)

default_user_config["iot"] = {"use_valid_cert": True}


def watch_stdin():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except Exception:
        pass
    os._exit(0)


threading.Thread(target=watch_stdin, daemon=True).start()
moto.server.main(sys.argv[1:])
