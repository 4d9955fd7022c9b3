"""Models on a server, used like model files: ``http(s)://HOST:PORT/models/NAME``.

:func:`is_model_url` tells a server model from a file; :class:`RemotePredictor` has the
:class:`~AttentionSegLib.inference.predictor.Predictor`'s interface (``predict``,
``predict_window``, ``object_segmenter``, ``model_file`` with the model's metadata) and runs the
same engine on the server, so a caller (the CLI, the Slicer Logic, the web page) does not know the
difference and gets the same results. The token comes from ``ATTENTIONSEG_TOKEN``.

Images are uploaded once per client and referred to by SHA-256; when the server no longer has one
(evicted, or the server restarted) it is uploaded again and the request repeated. Requests that
meet a dropped connection or a server error (a replica that died) are repeated a few times with a
growing pause: every request is stateless, so repeating it is safe. What still fails is one line:
server unreachable, token refused, model missing, time-out.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence

import numpy as np

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_file import ModelFile
from AttentionSegLib.inference.model_source import is_model_url, split_model_url  # noqa: F401 - this module's interface
from AttentionSegLib.inference.predictor import Prediction, Predictor
from AttentionSegLib.io.image import Image
from AttentionSegLib.serve import wire
from AttentionSegLib.serve.tokens import TOKEN_VARIABLE

__all__ = [
    "is_model_url",
    "split_model_url",
    "ServerClient",
    "ServerError",
    "RemotePredictor",
    "RemoteObjectSegmenter",
    "remote_model_file",
]

RETRIES = 6  # pauses 0.25, 0.5, 1, 2, 4, 8 s: Ray Serve replaces a dead replica within them
REFUSED_RETRIES = 2  # a refused connection: the server is down (or restarting), not a replica
PROMPT_TIMEOUT_S = 60.0
SEGMENT_TIMEOUT_S = 900.0


class ServerError(AttentionSegError):
    """The server could not be reached or refused a request; one line, naming the server."""


class ServerClient:
    """Requests to one server with one token (default ``ATTENTIONSEG_TOKEN``)."""

    def __init__(self, base_url: str, token: str | None = None, retries: int = RETRIES) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_VARIABLE, "")
        self.retries = retries
        self.retried = 0  # requests repeated after a dropped connection or a server error
        self.round_trips: list[float] = []  # seconds of each answered request (the last 10000), for benchmarks
        self._uploaded: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ HTTP
    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = PROMPT_TIMEOUT_S) -> bytes:
        """The answer's body. Raises :class:`ServerError` (or ``_ImageUnknown``) in one line."""
        url = self.base_url + path
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            headers["Content-Type"] = wire.MESSAGE_TYPE
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                time.sleep(0.25 * 2 ** (attempt - 1))
            request = urllib.request.Request(url, data=body, method=method, headers=headers)
            try:
                started = time.perf_counter()
                with urllib.request.urlopen(request, timeout=timeout) as answer:
                    content = answer.read()
                self.round_trips.append(time.perf_counter() - started)
                del self.round_trips[:-10000]
                return content
            except urllib.error.HTTPError as error:
                detail = _detail(error)
                if error.code == 401:
                    raise ServerError(f"{self.base_url}: token refused (set {TOKEN_VARIABLE} to your token)") from None
                if error.code == 404 and detail.get("code") == "image-unknown":
                    raise _ImageUnknown() from None
                if error.code < 500:
                    raise ServerError(f"{self.base_url}: {detail.get('detail') or error.reason}") from None
                last = f"server error {error.code} ({str(detail.get('detail') or error.reason)[:120]})"
            except TimeoutError:
                raise ServerError(f"{self.base_url}: no answer within {timeout:.0f} s (time-out)") from None
            except urllib.error.URLError as error:
                reason = error.reason
                if isinstance(reason, TimeoutError):
                    raise ServerError(f"{self.base_url}: no answer within {timeout:.0f} s (time-out)") from None
                last = f"server unreachable ({reason})"
                if isinstance(reason, ConnectionRefusedError) and attempt >= REFUSED_RETRIES:
                    break  # nothing listens: a dead replica gives a server error, not this
            except (ConnectionError, http.client.HTTPException) as error:
                last = f"connection dropped ({type(error).__name__})"
        raise ServerError(f"{self.base_url}: {last}")

    def get_json(self, path: str) -> dict:
        return json.loads(self.request("GET", path))

    def models(self) -> list[dict]:
        """The served models: ``[{"name", "interactive", "channels", "labels", "dims"}]``."""
        return self.get_json("/models")["models"]

    def model_path(self, name: str) -> str:
        """``/models/NAME`` of a model on this server (the path of its requests)."""
        return f"/models/{urllib.parse.quote(name)}"

    def model_url(self, name: str) -> str:
        return self.base_url + self.model_path(name)

    # ------------------------------------------------------------------------------ images
    def upload(self, image_body: bytes, digest: str, force: bool = False) -> None:
        with self._lock:
            if digest in self._uploaded and not force:
                return
        self.request("PUT", f"/images/{digest}", image_body, timeout=SEGMENT_TIMEOUT_S)
        with self._lock:
            self._uploaded.add(digest)

    def call(self, path: str, image: UploadedImage, header: dict, arrays=None, timeout: float = PROMPT_TIMEOUT_S):
        """``(header, arrays)`` of a request about ``image`` (uploaded first if needed, and again
        when the server has forgotten it)."""
        self.upload(image.body, image.digest)
        body = wire.encode({**header, "image": image.digest}, arrays, compress=tuple(arrays or ()))
        try:
            answer = self.request("POST", path, body, timeout)
        except _ImageUnknown:
            self.upload(image.body, image.digest, force=True)
            answer = self.request("POST", path, body, timeout)
        return wire.decode(answer)


class _ImageUnknown(Exception):
    pass


def _detail(error: urllib.error.HTTPError) -> dict:
    try:
        value = json.loads(error.read() or b"{}")
        return value if isinstance(value, dict) else {}
    except ValueError:
        return {}


class UploadedImage:
    """One stacked image as the server stores it, with its SHA-256 (computed once)."""

    def __init__(self, image: Image) -> None:
        header = {
            "spacing": list(image.spacing),
            "origin": list(image.origin),
            "direction": np.asarray(image.direction, dtype=float).tolist(),
        }
        array = image.array if image.has_channels else image.array[None]
        self.body = wire.encode(header, {"image": array.astype(np.float32, copy=False)})
        self.digest = hashlib.sha256(self.body).hexdigest()


_CLIENTS: dict[tuple[str, str], ServerClient] = {}


def client_for(base_url: str) -> ServerClient:
    """One client per server and token (its uploads are remembered)."""
    token = os.environ.get(TOKEN_VARIABLE, "")
    key = (base_url, token)
    if key not in _CLIENTS:
        _CLIENTS[key] = ServerClient(base_url, token)
    return _CLIENTS[key]


def remote_model_file(url: str) -> ModelFile:
    """The metadata of a server's model as a :class:`ModelFile` without weights.

    Raises:
        ServerError: unreachable, token refused, or no such model.
    """
    base, name = split_model_url(url)
    client = client_for(base)
    metadata = client.get_json(client.model_path(name))["metadata"]
    return ModelFile.from_metadata(metadata, source=url)


class RemotePredictor(Predictor):
    """A :class:`Predictor` whose network runs on a server: same inputs, checks and outputs.

    The inherited input checks (channels, grids, finite values) run here, before any upload; the
    options (``tta``, ``overlap``, ``keep_largest``) go with each request; the device is the
    server's.
    """

    def __init__(
        self,
        url: str,
        device: str = "auto",
        tta: bool = False,
        overlap: float = 0.5,
        sw_batch_size: int = 4,
        keep_largest: bool = False,
        warn=None,
    ) -> None:
        if not 0 <= overlap < 1:
            raise AttentionSegError(f"overlap must be in [0, 1), got {overlap}")
        self.base_url, self.name = split_model_url(url)
        self.client = client_for(self.base_url)
        self.model_file = remote_model_file(url)
        self.source = url
        self.tta, self.overlap, self.keep_largest = tta, overlap, keep_largest
        self.sw_batch_size = sw_batch_size
        self.warn = warn or (lambda message: None)
        self._read_model_file()
        self.device = "server"
        self._path = self.client.model_path(self.name)

    def predict(
        self,
        images,
        clinical: Mapping[str, float] | Sequence[float] | None = None,
        progress=None,
        cancel=None,
        names: Sequence[str] | None = None,
        uncertainty: str | None = None,
    ) -> Prediction:
        self.model_file.check_automatic(self.source)
        self._check_uncertainty(uncertainty)
        image = self.stack_channels(images, names)
        self.clinical_vector(clinical)  # refused here, as locally
        if cancel is not None and cancel():
            from AttentionSegLib.inference.window import PredictionCancelled

            raise PredictionCancelled()
        started = time.perf_counter()
        header = {"tta": self.tta, "overlap": self.overlap, "keep_largest": self.keep_largest}
        header.update(clinical=_plain(clinical), uncertainty=uncertainty)
        answer, arrays = self.client.call(
            f"{self._path}/segment", UploadedImage(image), header, timeout=SEGMENT_TIMEOUT_S
        )
        if progress is not None:
            progress(1.0)
        seconds = dict(answer.get("seconds", {}))
        seconds["round_trip"] = time.perf_counter() - started
        labels = image.with_array(np.array(arrays["labels"]), has_channels=False)
        map_ = None
        if "uncertainty" in arrays:
            map_ = image.with_array(np.array(arrays["uncertainty"]), has_channels=False)
        return Prediction(labels, seconds, f"server ({answer.get('device', '?')})", map_)

    def predict_window(self, images, center_index, clinical=None):
        image = self.stack_channels(images)
        header = {"center": [float(v) for v in center_index], "clinical": _plain(clinical)}
        answer, arrays = self.client.call(f"{self._path}/window", UploadedImage(image), header)
        return np.array(arrays["labels"]), wire.region_from_json(answer["region"])

    def object_segmenter(self, stacked: Image, normalized=None):
        """A segmenter whose windows run on the server; the image it is given is the raw stacked
        one (the server normalises)."""
        return RemoteObjectSegmenter(self.client, self._path, stacked), stacked.array


def _plain(clinical):
    if clinical is None:
        return None
    if isinstance(clinical, Mapping):
        return {str(k): float(v) for k, v in clinical.items()}
    return [float(v) for v in clinical]


class RemoteObjectSegmenter:
    """:class:`~AttentionSegLib.interactive.segmenter.ObjectSegmenter`'s interface over the server:
    each prediction sends the prompts and the object's current mask; nothing stays on the server."""

    def __init__(self, client: ServerClient, path: str, stacked: Image) -> None:
        self.client, self.path = client, path
        self.image = UploadedImage(stacked)
        self.spacing = tuple(float(v) for v in stacked.spacing_array_order)
        self.uncertain: list = []  # the last request, for a suggestion (cleared on undo, like the local one)

    def predict(self, image: np.ndarray, prompts) -> tuple[tuple[slice, ...], np.ndarray]:
        header, arrays = wire.pack_mask(prompts.previous_mask)
        header["prompts"] = wire.prompts_to_json(prompts)
        answer, answer_arrays = self.client.call(f"{self.path}/prompt", self.image, header, arrays)
        self.uncertain = [(header, arrays)]  # the request as sent (the session's mask changes next)
        return wire.region_from_json(answer["region"]), answer_arrays["mask"].astype(bool)

    def least_certain(self):
        """Asks the server again with the last request (a suggestion is asked for rarely; keeping
        it on every click would cost every click)."""
        if not self.uncertain:
            return None
        header, arrays = self.uncertain[-1]
        answer, _ = self.client.call(f"{self.path}/prompt", self.image, {**header, "suggest": True}, arrays)
        found = answer.get("least_certain")
        return None if found is None else (tuple(int(v) for v in found[0]), float(found[1]))
