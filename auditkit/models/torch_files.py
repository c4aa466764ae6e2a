"""Reading PyTorch files safely: what a file holds (from its bytes, never by unpickling),
torch's tensors-only loader, and torch's errors said in one line. Shared by the state-dict
reader and the file formats (torch.export, TorchScript, pickles)."""
from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from auditkit.errors import UsageError
from auditkit.models.format import factory_parts

# torch.save's legacy (pre-1.6) format opens with a pickled magic number: a 10-byte LONG1.
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_ZIP_MAGIC = b"PK\x03\x04"
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_WEIGHTS_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")
_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class TensorsOnlyRefused(Exception):
    """torch's tensors-only loader refused a sound torch.save file: it needs the Python global
    ``needs`` (a class or function; unpickling it would run code), or, with ``needs`` None,
    pickle features that loader does not read (``reason``)."""

    def __init__(self, needs: str | None, reason: str):
        super().__init__(reason)
        self.needs = needs
        self.reason = reason


def load_tensors_only(file: Path, what: str) -> Any:
    """``torch.load(file, weights_only=True)`` of a file whose :func:`file_kind` is torch.save.

    Raises:
        TensorsOnlyRefused: the file is sound but holds more than tensors and plain containers,
            or uses pickle opcodes that loader does not read.
        UsageError: the file is corrupt or truncated.
    """
    try:
        with warnings.catch_warnings():
            # torch's note about the file's pickle protocol is for whoever saved it
            warnings.filterwarnings("ignore", message=r".*pickle protocol", category=UserWarning)
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = _TERMINAL_CODES.sub("", str(exc))
        needs = _UNSUPPORTED_GLOBAL.search(text)
        if needs:
            raise TensorsOnlyRefused(needs.group(1), f"it needs {needs.group(1)}") from exc
        reason = _WEIGHTS_UNPICKLER_REASON.search(text)
        if reason and reason.group(1).startswith("Unsupported operand"):
            raise TensorsOnlyRefused(None, reason.group(1).strip()) from exc
        raise UsageError(_corrupt(what, "torch.save file", torch_error_text(exc))) from exc
    except Exception as exc:
        raise UsageError(_corrupt(what, "torch.save file", torch_error_text(exc))) from exc


def not_loadable(file: Path, kind: str, what: str, expected: str) -> str:
    """The one-line message for a file that is not what ``what`` needs, by its :func:`file_kind`."""
    if kind == "corrupt":
        return _corrupt(what, "zip archive", "its zip directory, at the end of the file, is missing")
    if kind in ("export", "torchscript"):
        return f"{what}: a {kind_name(kind)} (a whole model), not a state_dict; expected {expected}"
    empty = " (the file is empty)" if file.stat().st_size == 0 else ""
    return f"{what}: not a PyTorch file{empty}; expected {expected}"


def _corrupt(what: str, kind: str, detail: str) -> str:
    return f"{what}: corrupt or truncated {kind} ({detail}); was the download or copy cut short?"


def torch_error_text(exc: BaseException) -> str:
    """The informative part of a torch error, on one line: the tensors-only unpickler's own
    reason, else the first sentence of the first line; never terminal colour codes or torch's
    advice (such as re-running ``torch.load`` with ``weights_only=False``)."""
    text = _TERMINAL_CODES.sub("", str(exc)).strip()
    reason = _WEIGHTS_UNPICKLER_REASON.search(text)
    if reason:
        text = reason.group(1)
    line = text.splitlines()[0].strip() if text else ""
    sentence = re.split(r"(?<=\w)\.\s", line, maxsplit=1)[0].rstrip(".")
    return f"{type(exc).__name__}: {sentence}" if sentence else type(exc).__name__



def kind_name(kind: str) -> str:
    return {"export": "torch.export archive", "torchscript": "TorchScript file"}.get(kind, kind)


def file_kind(path: Path) -> str:
    """What the file holds, from its contents: 'export', 'torchscript', 'torch.save', 'corrupt'
    (a zip archive whose directory is missing or damaged: cut short) or 'unknown' (not a PyTorch
    file). A zip archive of no known layout counts as 'export' when named .pt2 (older
    torch.export archives carry no marker)."""
    with open(path, "rb") as handle:
        head = handle.read(32)
    if head.startswith(_ZIP_MAGIC) or zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "corrupt"
        inner = {n.split("/", 1)[1] if "/" in n else n for n in names}
        if "archive_format" in inner or any(n.startswith("models/") for n in inner):
            return "export"
        if "constants.pkl" in inner or any(n.startswith("code/") for n in inner):
            return "torchscript"
        if "data.pkl" in inner:
            return "torch.save"
        return "export" if path.suffix.lower() == ".pt2" else "unknown"
    # The legacy format is a pickle (PROTO, 0x80) of torch's magic number; any other pickle is
    # not torch.save's, and torch.load would refuse it.
    return "torch.save" if head[:1] == b"\x80" and _LEGACY_MAGIC in head else "unknown"



def model_file(spec: str, kind: str) -> Path | None:
    """The file ``spec`` names when it exists and holds ``kind`` (see :func:`file_kind`),
    else None: how the file formats tell which spec is theirs."""
    if factory_parts(spec) is not None:
        return None
    path = Path(spec).expanduser()
    if not path.is_file() or path.suffix == ".py":
        return None
    return path if file_kind(path) == kind else None
