"""How a pymulproc message ``[request, sender, recipient, data]`` maps onto
a mulproc message (request code, sender pid, recipient pid, payload).

- ``REQ_DO``, ``REQ_FINISHED``, ``REQ_DIE`` are mulproc's built-in codes
  1, 2 and 3, with the data as the payload.
- Any other string request is code 15 (``NAMED_REQUEST``, reserved for
  mulproc): the payload starts with the request's UTF-8 length (4 bytes,
  little endian) and bytes, then the data.
- An int request is that code as it is (a Rust peer's own codes arrive
  as ints; codes 1-3 read back as the strings above).
- Any other request object is code 14 (``ENCODED_REQUEST``): the payload
  starts with the length and the encoding of the request (the channel's
  serializer), then the data.
- The data is the channel's serializer's encoding (pickle by default,
  JSON for ``serializer="json"``); ``None`` is an empty payload.
"""

import json
import pickle
import struct

from . import mpq_protocol

NAMED_REQUEST = 15
ENCODED_REQUEST = 14
_BUILT_IN = {mpq_protocol.REQ_DO: 1, mpq_protocol.REQ_FINISHED: 2, mpq_protocol.REQ_DIE: 3}
_BY_CODE = {code: name for name, code in _BUILT_IN.items()}
_LEN = struct.Struct("<I")


def _dumps(serializer, obj):
    if serializer == "json":
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if serializer == "bytes":
        return bytes(obj)
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _loads(serializer, data):
    if serializer == "json":
        return json.loads(data)
    if serializer == "bytes":
        return bytes(data)
    return pickle.loads(data)


def _pid(what, pid):
    if pid is None:
        return None
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise TypeError(f"{what} must be an int pid or None, not {type(pid).__name__}")
    return pid


def encode(message, serializer):
    """``(code, sender, recipient, payload)`` for a message list."""
    if not isinstance(message, (list, tuple)) or len(message) != 4:
        raise ValueError("a pymulproc message is a list of 4: [request, sender_pid, recipient_pid, data]")
    request, sender, recipient, data = message
    body = b"" if data is None else _dumps(serializer, data)
    if isinstance(request, str) and request in _BUILT_IN:
        code, prefix = _BUILT_IN[request], b""
    elif isinstance(request, int) and not isinstance(request, bool) and 0 <= request < 2**32:
        code, prefix = request, b""
    elif isinstance(request, str):
        raw = request.encode("utf-8")
        code, prefix = NAMED_REQUEST, _LEN.pack(len(raw)) + raw
    else:
        raw = _dumps(serializer, request)
        code, prefix = ENCODED_REQUEST, _LEN.pack(len(raw)) + raw
    return code, _pid("sender_pid", sender), _pid("recipient_pid", recipient), prefix + body


def _split(payload):
    (n,) = _LEN.unpack_from(payload)
    return payload[4 : 4 + n], payload[4 + n :]


def decode(code, sender, recipient, payload, serializer):
    """The message list for a received mulproc message."""
    if code == NAMED_REQUEST:
        raw, body = _split(payload)
        request = bytes(raw).decode("utf-8")
    elif code == ENCODED_REQUEST:
        raw, body = _split(payload)
        request = _loads(serializer, raw)
    else:
        request, body = _BY_CODE.get(code, code), payload
    data = _loads(serializer, body) if len(body) else None
    return [request, sender, recipient, data]
