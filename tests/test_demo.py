"""The README's first command's flow: `later-read sandbox demo` end to end on servers it starts itself
(seed, prewarm, push of the current hour, the topic read back, one user sent twice and found by `sent`)."""

from __future__ import annotations

import json
import re

from helpers import run_cli
from later_read.core.message import PushMessage


def test_the_sandbox_demo_runs_the_whole_flow():
    result = run_cli("sandbox", "demo", "--users", "300", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    counts = re.search(r"^topic (\S+): (\d+) messages, (\d+) distinct msg_id$", out, re.MULTILINE)
    assert counts is not None, out[-3000:]
    messages, distinct = int(counts[2]), int(counts[3])
    assert messages == distinct > 0  # the push: one message per user
    shown = out[counts.end() : out.index("\n}\n", counts.end()) + 2]
    message = PushMessage.decode(json.dumps(json.loads(shown)))  # the message printed is a whole push message
    assert message.to_dict() == json.loads(shown) and message.push_date and message.expires_at
    assert "sent.duplicates count=1" in out  # the user sent twice is found, once
    duplicates = re.findall(r"^sent\.duplicate msg_id=(\S+) uid=(\S+) copies=(\d+) ", out, re.MULTILINE)
    assert len(duplicates) == 1 and duplicates[0][2] == "2", duplicates
