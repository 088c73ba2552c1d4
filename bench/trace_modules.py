"""Which of the gateway's modules one /api chat call enters, in order (the call path's shape).

    .venv/bin/python bench/trace_modules.py            # cache=no
    .venv/bin/python bench/trace_modules.py --cache yes

The app built by create_app() (SQLite in a temporary directory, the bundled stub upstream) is
called three times to warm up, then once under sys.setprofile. A "visit" is an entry into a
proxy module while that module is not already on the stack: a module visited twice was left
and entered again. Prints the count by module and the path, with the renderers' per-value
calls into php_values folded into one step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from proxy import create_app  # noqa: E402
from stub_upstream import StubServer  # noqa: E402

PACKAGE = str(REPO / "proxy") + os.sep


def visits_of_one_call(client, query: dict) -> list[str]:
    on_stack: Counter = Counter()
    visits: list[str] = []
    me = threading.get_ident()

    def profile(frame, event, _arg):
        filename = frame.f_code.co_filename
        if threading.get_ident() != me or not filename.startswith(PACKAGE):
            return
        module = filename[len(PACKAGE) :]
        if event == "call":
            if on_stack[module] == 0:
                visits.append(module)
            on_stack[module] += 1
        elif event == "return":
            on_stack[module] -= 1

    sys.setprofile(profile)
    try:
        client.get("/api", query_string=query)
    finally:
        sys.setprofile(None)
    return visits


def folded(visits: list[str]) -> str:
    steps: list[list] = []
    for module in visits:
        if steps and steps[-1][0] == module == "php_values.py":
            steps[-1][1] += 1
        else:
            steps.append([module, 1])
    return " > ".join(m + (f" x{n}" if n > 1 else "") for m, n in steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", choices=("no", "yes"), default="no")
    cache = parser.parse_args().cache
    with StubServer() as stub, tempfile.TemporaryDirectory() as workdir:
        app = create_app(
            {
                "DATABASE_URL": f"sqlite:///{workdir}/trace.sqlite3",
                "OPENAI_BASE_URL": stub.base_url,
                "OPENAI_API_KEY": "sk-trace",
            }
        )
        created = app.test_cli_runner().invoke(args=["accounts", "create", "t", "--json"])
        account = json.loads(created.output)
        client = app.test_client()
        query = {
            "key": account["key"],
            "secret": account["secret"],
            "method": "v1/chat/completions",
            "_o_args": json.dumps({"messages": [{"role": "user", "content": "hello"}]}),
            "cache": cache,
        }
        for _ in range(3):
            client.get("/api", query_string=query)
        visits = visits_of_one_call(client, query)
    count = Counter(visits)
    again = {module: n for module, n in count.items() if n > 1}
    print(f"cache={cache}: {len(count)} modules, {len(visits)} visits")
    print(f"visited more than once: {again}")
    print(f"path: {folded(visits)}")


if __name__ == "__main__":
    main()
