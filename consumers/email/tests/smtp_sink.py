"""An SMTP server for the email consumer's tests: accepts every message on 127.0.0.1:PORT
and writes each one, as received, to OUT_DIR/NNNN.eml (written under a temporary name and
renamed, so a reader never sees half a message). Runs until killed.

usage: smtp_sink.py PORT OUT_DIR [reject | delay=SECONDS]

With `reject`, every message is refused with a permanent error (550) and nothing is written.
With `delay=SECONDS`, each message is written at once but acknowledged (250) only after
SECONDS, so a test can break something while the sender waits for the answer.
"""
import asyncio
import pathlib
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, out: pathlib.Path, reject: bool = False, delay: float = 0.0):
        self.out = out
        self.reject = reject
        self.delay = delay
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        if self.reject:
            return "550 5.7.1 message refused by the test sink"
        with self.lock:
            self.count += 1
            n = self.count
        tmp = self.out / f".{n:04}.tmp"
        recipients = "".join(f"X-Envelope-To: {r}\r\n" for r in envelope.rcpt_tos)
        tmp.write_bytes(recipients.encode() + envelope.original_content)
        tmp.rename(self.out / f"{n:04}.eml")
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 OK"


def main() -> None:
    port, out = int(sys.argv[1]), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    option = sys.argv[3] if len(sys.argv) > 3 else ""
    reject = option == "reject"
    delay = float(option.removeprefix("delay=")) if option.startswith("delay=") else 0.0
    controller = Controller(Sink(out, reject, delay), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"smtp sink listening on 127.0.0.1:{port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
