"""Thread name groups: a thread's name with its digits and hex ids replaced by ``N``.

``worker-3`` and ``worker-12`` form the group ``worker-N``; ``pool-1-thread-7`` becomes
``pool-N-thread-N``. Names arrive cut to 15 bytes by the kernel (TASK_COMM_LEN), so
``http-nio-8080-exec-10`` and ``http-nio-8080-exec-2`` both arrive as ``http-nio-8080-e``
and share a group without extra work. Groups compare case-insensitively.
"""

import re

# A 0x-prefixed number, or a run of 6 or more hex digits that holds at least one digit
# (an address or id such as ``7f3a9c``), then any remaining run of decimal digits.
_HEX = re.compile(r"0x[0-9a-f]+|\b(?=[0-9a-f]*[0-9])[0-9a-f]{6,}\b")
_DIGITS = re.compile(r"[0-9]+")


def name_group(comm: str) -> str:
    """Return the group of a thread name: lowercase, hex ids and digit runs as ``N``."""
    lowered = comm.strip().lower()
    without_hex = _HEX.sub("N", lowered)
    return _DIGITS.sub("N", without_hex) or "(unnamed)"
