"""A TCP proxy between hsmd and PostgreSQL that loses the answer to one COMMIT
(used by test_pg_lost_commit.py; not a test module itself).

It runs in the test's own process, on threads, on a free loopback port, and
reads the frontend (client -> server) stream of each connection message by
message: Parse messages give prepared statements their SQL, Bind messages say
which statement runs, simple Query messages carry BEGIN and COMMIT.  Once
armed, the first COMMIT of a transaction that bound a statement whose SQL
starts with the armed trigger text is

- dropped (``forward=False``): never passed on; both sockets are closed, so
  PostgreSQL rolls the transaction back and hsmd gets no answer; or
- passed on with its answer withheld (``forward=True``): the proxy waits for
  PostgreSQL's answer (the transaction committed), swallows it and closes
  both sockets, so hsmd sees its connection break with no answer.

With ``unanswerable=True`` the proxy then closes, until ``answerable()``, every
connection that asks PostgreSQL how a transaction ended (a statement calling
txid_status or pg_xact_status, or earlier hsmd's outbox probe), before the
question reaches the server: hsmd cannot learn the outcome, while the rest of
its work on the store (giving an approval back, say) goes on as usual.

The frontend stream is read only after the startup phase, so the store URI
given to hsmd must say ``sslmode=disable&gssencmode=disable``.
"""
import socket
import struct
import threading

SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104
# SQL that asks how a transaction ended: PostgreSQL's functions for it, and the outbox
# probe earlier hsmd settled a lost COMMIT with (an insert that waits on the row's key).
SETTLE_SQL = ("txid_status(", "pg_xact_status(", "'probe'")


def _asks_outcome(sql):
    return any(s in sql for s in SETTLE_SQL)


class _Conn:
    def __init__(self, cli, srv):
        self.cli, self.srv = cli, srv
        self.muted = False
        self.answered = threading.Event()
        self.closed = False

    def cut(self):
        self.closed = True
        for s in (self.cli, self.srv):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


class CommitProxy:
    """Listens on 127.0.0.1:<port> and forwards to 127.0.0.1:<pg_port>."""

    def __init__(self, pg_port):
        self.pg_port = pg_port
        self._lock = threading.Lock()
        self._armed = None  # (trigger, forward, unanswerable)
        self._unanswerable = False
        self._closing = False
        self._conns = []
        self._threads = []
        self.questions_cut = 0  # questions about a transaction's outcome cut
        self.events = []  # what the proxy did, for assertion messages
        self.fired = threading.Event()
        self.fired_what = None  # what the armed proxy did, once it did
        self._ls = socket.socket()
        self._ls.bind(("127.0.0.1", 0))
        self._ls.listen(64)
        self._ls.settimeout(0.1)
        self.port = self._ls.getsockname()[1]
        self._start(self._accept_loop)

    # ---- control ------------------------------------------------------------------------

    def arm(self, trigger, forward=False, unanswerable=False):
        """Loses the answer to the next COMMIT of a transaction that bound a statement
        whose SQL starts with trigger (dropped, or passed on when forward); then, when
        unanswerable, cuts every question about a transaction's outcome until
        answerable()."""
        with self._lock:
            self.fired.clear()
            self.fired_what = None
            self._armed = (trigger, forward, unanswerable)

    def disarm(self):
        with self._lock:
            self._armed = None

    def answerable(self):
        with self._lock:
            self._unanswerable = False

    def close(self):
        """Stops accepting, closes every connection, and waits for the threads."""
        with self._lock:
            self._closing = True
            conns = list(self._conns)
        for c in conns:
            c.cut()
        for t in list(self._threads):
            t.join(timeout=10)
        self._ls.close()

    # ---- plumbing -----------------------------------------------------------------------

    def _start(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _note(self, what):
        with self._lock:
            self.events.append(what)

    def _accept_loop(self):
        while not self._closing:
            try:
                cli, _ = self._ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            cli.setblocking(True)
            if self._closing:
                cli.close()
                return
            try:
                srv = socket.create_connection(("127.0.0.1", self.pg_port), timeout=10)
                srv.settimeout(None)
            except OSError:
                cli.close()
                continue
            c = _Conn(cli, srv)
            with self._lock:
                self._conns = [x for x in self._conns if not x.closed] + [c]
            self._start(self._backend, c)
            self._start(self._frontend, c)

    def _backend(self, c):
        """Server -> client, byte for byte, unless the COMMIT's answer is withheld."""
        try:
            while True:
                b = c.srv.recv(65536)
                if not b:
                    break
                if c.muted:
                    c.answered.set()
                    continue
                c.cli.sendall(b)
        except OSError:
            pass
        c.cut()

    def _frontend(self, c):
        f = c.cli.makefile("rb")
        try:
            # Startup phase: length-prefixed messages without a type byte; an SSL or GSS
            # encryption request is refused by the server (the URI disables both anyway).
            while True:
                hdr = self._read(f, 4)
                body = self._read(f, struct.unpack("!I", hdr)[0] - 4)
                c.srv.sendall(hdr + body)
                if struct.unpack("!I", body[:4])[0] not in (SSL_REQUEST, GSSENC_REQUEST):
                    break
            stmts, touched = {}, False
            while True:
                t = self._read(f, 1)
                hdr = self._read(f, 4)
                body = self._read(f, struct.unpack("!I", hdr)[0] - 4)
                sql = None  # the SQL this message runs or prepares
                if t == b"P":  # Parse: statement name, SQL, ...
                    name, rest = body.split(b"\0", 1)
                    sql = rest.split(b"\0", 1)[0].decode(errors="replace")
                    stmts[name] = sql
                elif t == b"B":  # Bind: portal name, statement name, ...
                    sql = stmts.get(body.split(b"\0", 2)[1], "")
                    with self._lock:
                        trigger = self._armed[0] if self._armed else None
                    if trigger is not None and sql.startswith(trigger):
                        touched = True
                elif t == b"Q":  # a simple query
                    sql = body.rstrip(b"\0").decode(errors="replace").strip()
                if sql is not None and _asks_outcome(sql):
                    with self._lock:
                        cut = self._unanswerable
                        self.questions_cut += cut
                    if cut:
                        self._note("cut a question about a transaction's outcome")
                        break
                if t == b"Q":
                    word = sql.split(None, 1)[0].upper() if sql else ""
                    if word in ("BEGIN", "START"):
                        touched = False
                    elif word in ("COMMIT", "END") and touched:
                        with self._lock:
                            armed, self._armed = self._armed, None
                        if armed is not None:
                            self._lose_answer(c, t + hdr + body, armed)
                            return
                    if word in ("COMMIT", "END", "ROLLBACK", "ABORT"):
                        touched = False
                c.srv.sendall(t + hdr + body)
        except (EOFError, OSError, ValueError):
            pass
        c.cut()

    def _lose_answer(self, c, commit_msg, armed):
        trigger, forward, unanswerable = armed
        if forward:
            c.muted = True
            c.srv.sendall(commit_msg)
            answered = c.answered.wait(10)
            what = ("passed on a COMMIT and withheld its answer" if answered else
                    "passed on a COMMIT that got no answer within 10 s")
        else:
            what = "dropped a COMMIT"
        if unanswerable:
            with self._lock:
                self._unanswerable = True
            what += "; how it ended cannot be asked"
        c.cut()
        what = f"{what} ({trigger.strip()})"
        self._note(what)
        self.fired_what = what
        self.fired.set()

    @staticmethod
    def _read(f, n):
        data = f.read(n)
        if len(data) != n:
            raise EOFError
        return data
