"""An SQS endpoint that accepts every ``SendMessage`` and ``SendMessageBatch`` at once and keeps
nothing (used by the sync benchmark, in a process of its own, to measure the fan-out and the sync
worker where the queue is not the bound: ``python -m devtools.bench._instant_sqs PORT``). It
speaks the JSON protocol boto3's SQS client uses (botocore 1.44, as installed here: a POST of
``application/x-amz-json-1.0`` naming the operation in ``X-Amz-Target``, ``AmazonSQS.<Operation>``);
any other operation is answered with an error, as SQS answers one it does not know."""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # the requests are not logged
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        out: dict[str, Any]
        status, out = 400, {"__type": "com.amazonaws.sqs#UnsupportedOperation", "message": "not here"}
        target = self.headers.get("X-Amz-Target")
        if target == "AmazonSQS.SendMessageBatch":
            accepted = [{"Id": entry["Id"], **_sent(entry)} for entry in body.get("Entries", [])]
            status, out = 200, {"Successful": accepted, "Failed": []}
        elif target == "AmazonSQS.SendMessage":
            status, out = 200, _sent(body)
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _sent(message: dict[str, Any]) -> dict[str, str]:
    """What SQS answers for a message it accepted (botocore checks the body's MD5)."""
    md5 = hashlib.md5(message["MessageBody"].encode()).hexdigest()  # noqa: S324 - SQS's checksum, not security
    return {"MessageId": str(uuid.uuid4()), "MD5OfMessageBody": md5}


def main(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), _Handler).serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
