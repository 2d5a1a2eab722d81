"""A real OpenAI-compatible server for tests: llama-cpp-python's, serving the embedded SmolLM2 GGUF on CPU.

    with LlamaServer(tmp_path, api_key="...") as server:
        ChatClient("smollm2", base_url=server.base_url, ...)

Starts in ~5-10 s on 2 cores. ``skip_reason()`` says why it cannot run here (the package or its server
extras missing, or no embedded model), for ``pytest.skip``.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


def skip_reason() -> str | None:
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return (f"llama-cpp-python's server is not installed (missing {', '.join(missing)}): "
                f"pip install 'llama-cpp-python[server]'")
    try:
        gguf_path()
    except Exception as exc:  # noqa: BLE001 - any reason the model is absent is a reason to skip
        return f"no embedded GGUF model to serve: {exc}"
    return None


def gguf_path() -> Path:
    from safepref.models import embedded_gguf

    return embedded_gguf("smollm2-135m-instruct")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` in a subprocess on a free port; stopped on exit or by ``stop()``."""

    def __init__(self, log_dir: Path, api_key: str | None = None, n_ctx: int = 2048,
                 startup_timeout: float = 90.0) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_file = Path(log_dir) / f"llama-server-{self.port}.log"
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()),
                   "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(n_ctx)]
        if api_key is not None:
            command += ["--api_key", api_key]
        self._command = command
        self._startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None

    def start(self) -> LlamaServer:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("wb") as log:
            # Busy-waiting OpenMP threads stall prompt evaluation ~30x on a loaded 2-core machine (measured:
            # 15 s -> 0.5 s per short request); passive waiting costs nothing on an idle one.
            env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
            self.process = subprocess.Popen(self._command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._answers():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {self._startup_timeout:g} s:\n"
                           f"{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.base_url}/models", timeout=1).close()
        except urllib.error.HTTPError:
            return True  # 401 from a server with a key: it is up
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
