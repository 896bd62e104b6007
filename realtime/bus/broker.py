"""Broker: an XSUB/XPUB proxy so publishers and subscribers only need to know one address each."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import zmq

from brainstream.realtime.bus._socket import (
    DEFAULT_HWM,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PUB_ENDPOINT,
    DEFAULT_SUB_ENDPOINT,
    OpenedSocket,
    open_socket,
)
from brainstream.realtime.bus.security import CurveKeys, as_keys


class Broker:
    """Forward every publisher's messages to every matching subscriber (``zmq.proxy_steerable``).

    Parameters
    ----------
    frontend : str
        Where publishers connect (XSUB bind), default ``tcp://127.0.0.1:5701``.
    backend : str
        Where subscribers connect (XPUB bind), default ``tcp://127.0.0.1:5702``.
    keys : path | CurveKeys | None
        CURVE keys folder; required when either endpoint is not loopback. Only clients whose public key lies
        in ``DIR/authorized/`` may connect.
    max_message_size : int
        ``ZMQ_MAXMSGSIZE`` on the frontend: a publisher sending more is disconnected.
    context : zmq.Context | None
        Defaults to the process-wide context (needed for ``inproc://`` peers).

    Notes
    -----
    The broker forwards bytes without decoding them; receivers validate. It holds no state, so restarting it
    only loses what was in flight (subscribers see the loss as gaps).
    """

    def __init__(
        self,
        frontend: str = DEFAULT_PUB_ENDPOINT,
        backend: str = DEFAULT_SUB_ENDPOINT,
        *,
        keys: str | Path | CurveKeys | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        hwm: int = DEFAULT_HWM,
        context: zmq.Context | None = None,
    ) -> None:
        self.frontend = frontend
        self.backend = backend
        self._keys = as_keys(keys, client="client")
        self._max_message_size = max_message_size
        self._hwm = hwm
        self._context = context
        self._sockets: list[OpenedSocket] = []
        self._control_endpoint = f"inproc://brainstream-broker-{uuid.uuid4().hex}"
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # --------------------------------------------------------------- lifecycle
    def _open(self) -> tuple[zmq.Socket, zmq.Socket, zmq.Socket]:
        # With keys, one private context per broker so its authenticator polices only these two sockets.
        if self._keys is not None and self._context is None:
            self._context = zmq.Context()
            self._owned_context = True
        ctx = self._context or zmq.Context.instance()
        xsub = open_socket(
            zmq.XSUB,
            self.frontend,
            bind=True,
            keys=self._keys,
            context=ctx,
            max_message_size=self._max_message_size,
            hwm=self._hwm,
        )
        self._sockets.append(xsub)
        # the authenticator started with the frontend serves the whole context: do not start a second one
        xpub = open_socket(
            zmq.XPUB, self.backend, bind=True, keys=self._keys, context=ctx, hwm=self._hwm, authenticate=False
        )
        self._sockets.append(xpub)
        control = ctx.socket(zmq.PAIR)
        control.bind(self._control_endpoint)
        return xsub.socket, xpub.socket, control

    def start(self) -> Broker:
        """Bind both endpoints and forward in a background thread; returns once bound (or raises why not)."""
        if self._thread is not None:
            raise RuntimeError("broker already started")
        self._thread = threading.Thread(target=self._serve, name="bus-broker", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def _serve(self) -> None:
        try:
            xsub, xpub, control = self._open()
        except BaseException as exc:  # reported to start()'s caller
            self._error = exc
            self._close_sockets()
            self._ready.set()
            return
        self._ready.set()
        try:
            zmq.proxy_steerable(xsub, xpub, None, control)
        except zmq.ContextTerminated:
            pass
        finally:
            control.close(linger=0)
            self._close_sockets()

    def run(self) -> None:
        """Start (unless started) and block until interrupted (the ``brainstream bus`` verb)."""
        if self._thread is None:
            self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop forwarding and release both ports."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        ctx = self._context or zmq.Context.instance()
        stopper = ctx.socket(zmq.PAIR)
        stopper.connect(self._control_endpoint)
        stopper.send(b"TERMINATE")
        thread.join(timeout=5)
        stopper.close(linger=0)
        if getattr(self, "_owned_context", False):
            self._context.term()
            self._context = None

    def _close_sockets(self) -> None:
        for opened in self._sockets:
            opened.socket.close(linger=0)
            if opened.auth is not None:
                opened.auth.stop()
        self._sockets.clear()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Broker:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Broker {self.frontend} -> {self.backend} ({'running' if self.running else 'stopped'})>"
