"""``finscore ask "TEXT"``: one customer question to the served ``assistant``; its intent and answer, or the
hand-over to a person when the model is not confident enough.

The question goes as the bytes typed: text the shell could not decode as UTF-8 reaches the model unchanged,
and the model's own check refuses it (INVALID_ARGUMENT, one sentence), as it would any client's.
"""

from __future__ import annotations

import argparse
import json
import os

from engine.cli.common import Subparsers, add_client_tls, client_tls
from engine.settings import resolve_settings

__all__ = ["add_parsers", "ask_command"]

MODEL = "assistant"


def add_parsers(sub: Subparsers) -> None:
    p = sub.add_parser("ask", help="ask the served assistant a customer's question")
    p.add_argument("text", metavar="TEXT", help='the question, e.g. "my card has not arrived"')
    p.add_argument("--url", help="server gRPC address HOST:PORT (default 127.0.0.1:8001)")
    p.add_argument("--model", default=MODEL, help="served model name (default assistant)")
    p.add_argument("--json", action="store_true", help="print the answer as one JSON document")
    add_client_tls(p)
    p.set_defaults(func=ask_command)


def ask_command(args: argparse.Namespace) -> int:
    import numpy as np

    from clients.grpc import ModelClient
    from clients.tensors import decode_outputs

    s = resolve_settings(url=args.url)
    # os.fsencode gives back the bytes typed, even those the shell's text could not decode.
    question = np.array([[os.fsencode(args.text)]], dtype=object)
    with ModelClient(s.url, args.model, tls=client_tls(args), features=False) as client:
        out = decode_outputs(client.infer_arrays({"text": question}))
    alternatives = [str(a) for a in out["alternatives"][0] if a]
    answer = {
        "intent": str(out["intent"][0]),
        "answer": str(out["answer"][0]),
        "confidence": round(float(out["confidence"][0]), 4),
        "escalate": bool(out["escalate"][0]),
        "alternatives": alternatives,
    }
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
        return 0
    verdict = "escalated to a person" if answer["escalate"] else "answered"
    print(f"intent: {answer['intent']} (confidence {answer['confidence']:.2f}, {verdict})")
    print(f"answer: {answer['answer']}")
    print(f"alternatives: {', '.join(alternatives)}")
    return 0
