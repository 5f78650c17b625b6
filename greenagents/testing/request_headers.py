"""A request's header block, parsed for pywsgi without the email package when it is plain.

pywsgi reads each request's headers with ``http.client.parse_headers``, whose email-package
parser is the simulator's largest per-request cost after the answer itself (~15% of a streamed
request's CPU, measured with py-spy on 4,000 requests, 2026-11-30). Header blocks that clients
send are plain ``Name: value`` lines; those become the same message here, line by line. Anything
else (folded lines, a line that is not a header, a stray CR) goes to the email parser as before,
so odd requests get exactly what they got.

>>> import io
>>> message = parse(io.BytesIO(b"Host: sim\\r\\nX-Sim-Latency:  0.5\\r\\n\\r\\n{}"))
>>> message.get("x-sim-latency"), message.status, list(message.headers)
('0.5', '', ['Host: sim\\r\\n', 'X-Sim-Latency: 0.5\\r\\n'])
"""

from __future__ import annotations

import email.parser
import re
from http import client
from typing import IO, Any

from gevent.pywsgi import OldMessage

#: http.client's limits: a header line's length, and how many lines a block may have.
MAX_LINE = 65536
MAX_HEADERS = 100
#: A line the email parser would read as one whole header: a name of printable characters but
#: ``:`` (its rule), the value, one line end.
_PLAIN = re.compile(r"([\x21-\x39\x3b-\x7e]+):[ \t]*([^\r\n]*)\r?\n")


def parse(fp: IO[bytes]) -> Any:
    """What ``gevent.pywsgi.headers_factory(fp)`` returns, read from ``fp`` up to the blank line."""
    lines = []
    while True:  # as http.client reads them
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            message = OldMessage()
            message.status = "Line too long"
            return message
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    message = OldMessage()
    for line in lines[:-1]:
        plain = _PLAIN.fullmatch(line.decode("iso-8859-1"))
        if plain is None:
            block = b"".join(lines).decode("iso-8859-1")
            return email.parser.Parser(_class=OldMessage).parsestr(block)
        message.set_raw(*plain.groups())
    return message
