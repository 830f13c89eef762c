"""A small mutation pass: do the tests of a module fail when its code is wrong?

    python tools/mutation_pass.py ch06_classification/lora.py tests/test_lora.py [--timeout S] [--list]

It copies the repository into a temporary folder (never touching the working tree), maps each line of the module
to the tests that run it (coverage.py, one context per test), then applies one small mutation at a time to the
copy and runs only the tests covering the mutated line, with `-x -q -p no:cacheprovider` and a timeout:

  comparisons  < <=, > >=, == !=, is / is not, in / not in      arithmetic  + -, * /, // /, ** *  (also in +=, *=)
  and / or, dropping a `not` or a unary minus                      integer constants n -> n + 1, True <-> False
  `return x` -> `return None`                                      dropping an argument that passes a parameter on
                                                                   (`f(x, pool=pool)` -> `f(x)`, last positional too)

Strings are never mutated, and nothing inside docstrings, comments, f-strings, annotations or `raise` statements
(their messages) is. A mutant on a line no test runs is a survivor "not covered" (no tests are run for it); a line
that runs only at import time (definitions, default values) is tested with the whole test file.

It prints the number of mutants, killed, survived and timeouts, and each survivor as `file:line  original -> mutant`.
A survivor is a change the tests cannot see: a missing test, or a harmless (equivalent) change. CPU-heavy: run it on
one module at a time.
"""
import argparse
import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORED = (".venv", "venv", ".git", "__pycache__", ".ipynb_checkpoints", "data", ".pytest_cache", "*.egg-info")
PYTEST_FLAGS = ["-x", "-q", "-p", "no:cacheprovider"]

SWAP_CMP = {ast.Lt: "<=", ast.LtE: "<", ast.Gt: ">=", ast.GtE: ">", ast.Eq: "!=", ast.NotEq: "==",
            ast.Is: "is not", ast.IsNot: "is", ast.In: "not in", ast.NotIn: "in"}
SWAP_BIN = {ast.Add: "-", ast.Sub: "+", ast.Mult: "/", ast.Div: "*", ast.FloorDiv: "/", ast.Pow: "*"}
SYMBOL = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is",
          ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
          ast.Div: "/", ast.FloorDiv: "//", ast.Pow: "**", ast.And: "and", ast.Or: "or"}


@dataclass
class Mutant:
    line: int  # 1-based line of the change
    start: int  # byte offsets of the replaced span in the source
    end: int
    new: bytes
    original: str  # what the report shows
    mutant: str


class MutantFinder(ast.NodeVisitor):
    """Walks the module's AST and records one Mutant per applicable change."""

    def __init__(self, source: bytes):
        self.source = source
        self.line_starts = [0]
        for line in source.split(b"\n"):
            self.line_starts.append(self.line_starts[-1] + len(line) + 1)
        self.mutants: list[Mutant] = []
        self.params: list[set[str]] = []  # parameters of each enclosing function

    # --- helpers ---------------------------------------------------------------------------------
    def offset(self, line: int, col: int) -> int:  # ast columns are UTF-8 byte offsets
        return self.line_starts[line - 1] + col

    def text(self, start: int, end: int) -> str:
        return self.source[start:end].decode("utf-8", "replace")

    def segment(self, node: ast.AST) -> tuple[int, int]:
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def add(self, line: int, start: int, end: int, new: str, node: ast.AST, shown: str | None = None) -> None:
        n_start, n_end = self.segment(node)
        before = self.text(n_start, n_end)
        after = self.text(n_start, start) + new + self.text(end, n_end)
        before, after = (" ".join(t.split()) for t in (before, after))  # one line in the report
        cut = lambda t: t if len(t) <= 100 else t[:97] + "..."
        self.mutants.append(Mutant(line, start, end, new.encode(), cut(shown or before),
                                   cut(after) if shown is None else "(dropped)"))

    def operator_between(self, left: ast.AST, right: ast.AST, symbol: str) -> tuple[int, int] | None:
        """Byte span of the operator `symbol` between two operands (None if not found, e.g. hidden by parentheses)."""
        lo, hi = self.offset(left.end_lineno, left.end_col_offset), self.offset(right.lineno, right.col_offset)
        gap = self.source[lo:hi]
        words = symbol.split()
        if len(words) == 2:  # "is not", "not in": any whitespace between the words
            i = gap.find(words[0].encode())
            j = gap.find(words[1].encode(), i + len(words[0])) if i >= 0 else -1
            return (lo + i, lo + j + len(words[1])) if i >= 0 and j >= 0 else None
        i = gap.find(symbol.encode())
        while i >= 0:  # "<" must not be the start of "<=", "*" not the start of "**", "/" not of "//"
            after = gap[i + len(symbol) : i + len(symbol) + 1]
            before = gap[i - 1 : i] if i else b""
            if after not in (b"=", symbol[-1:].encode()) and before != symbol[:1].encode():
                return lo + i, lo + i + len(symbol)
            i = gap.find(symbol.encode(), i + len(symbol) + 1)
        return None

    # --- what is not mutated ---------------------------------------------------------------------
    def visit_Raise(self, node):  # raise statements: their messages (and conditions are checked by the tests)
        return

    def visit_JoinedStr(self, node):  # f-strings: messages and printed text
        return

    def visit_Expr(self, node):  # docstrings and other bare strings
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return
        self.generic_visit(node)

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)

    def visit_Assign(self, node):
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        args = node.args
        names = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
        names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
        for default in args.defaults + [d for d in args.kw_defaults if d is not None]:
            self.visit(default)  # default values yes, annotations no
        for decorator in node.decorator_list:
            self.visit(decorator)
        self.params.append(names)
        for statement in node.body:
            self.visit(statement)
        self.params.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        for statement in node.body:
            self.visit(statement)

    # --- mutations -------------------------------------------------------------------------------
    def visit_Compare(self, node):
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            span = self.operator_between(left, right, SYMBOL[type(op)])
            if span:
                self.add(left.end_lineno, *span, SWAP_CMP[type(op)], node)
            left = right
        self.generic_visit(node)

    def visit_BinOp(self, node):
        if type(node.op) in SWAP_BIN:
            span = self.operator_between(node.left, node.right, SYMBOL[type(node.op)])
            if span:
                self.add(node.left.end_lineno, *span, SWAP_BIN[type(node.op)], node)
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        if type(node.op) in SWAP_BIN:
            span = self.operator_between(node.target, node.value, SYMBOL[type(node.op)] + "=")
            if span:
                self.add(node.lineno, *span, SWAP_BIN[type(node.op)] + "=", node)
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        symbol = SYMBOL[type(node.op)]
        for left, right in zip(node.values, node.values[1:]):
            span = self.operator_between(left, right, symbol)
            if span:
                self.add(left.end_lineno, *span, "or" if symbol == "and" else "and", node)
        self.generic_visit(node)

    @staticmethod
    def shown_with(node: ast.AST) -> ast.AST:
        """The expression around a small node (a number, -x), so that the report says where it is."""
        while isinstance(getattr(node, "parent", None), ast.expr) and isinstance(node, (ast.Constant, ast.UnaryOp)):
            node = node.parent
        return node

    def visit_UnaryOp(self, node):
        if isinstance(node.op, (ast.Not, ast.USub)):
            start, _ = self.segment(node)
            self.add(node.lineno, start, self.offset(node.operand.lineno, node.operand.col_offset), "",
                     self.shown_with(node))
        self.generic_visit(node)

    def visit_Constant(self, node):
        start, end = self.segment(node)
        if isinstance(node.value, bool):
            self.add(node.lineno, start, end, str(not node.value), self.shown_with(node))
        elif isinstance(node.value, int) and node.lineno == node.end_lineno:
            self.add(node.lineno, start, end, str(node.value + 1), self.shown_with(node))

    def visit_Return(self, node):
        value = node.value
        if value is not None and not (isinstance(value, ast.Constant) and value.value is None):
            start, end = self.segment(value)
            self.add(node.lineno, start, end, "None", node)
        self.generic_visit(node)

    def visit_Call(self, node):
        params = set().union(*self.params)  # a closure passes on the parameters of the functions around it too
        passed_on = [k for k in node.keywords if k.arg and isinstance(k.value, ast.Name) and k.value.id in params]
        for k in passed_on:
            self.drop_argument(node, k, f"{k.arg}={k.value.id}")
        last = node.args[-1] if node.args else None
        if (len(node.args) >= 2 and isinstance(last, ast.Name) and last.id in params
                and not any(isinstance(a, ast.Starred) for a in node.args)):
            self.drop_argument(node, last, last.id)
        self.generic_visit(node)

    def drop_argument(self, call: ast.Call, arg: ast.AST, shown: str) -> None:
        """Remove an argument with the comma that separates it from the one before (or after, if it is first)."""
        start, end = self.segment(arg)
        lo = self.offset(call.func.end_lineno, call.func.end_col_offset)
        before = self.source.rfind(b",", lo, start)
        call_end = self.segment(call)[1]
        if before >= 0 and not self.source[before + 1 : start].strip():  # only blanks between: ", arg"
            self.add(arg.lineno, before, end, "", call, shown)
            return
        after = self.source.find(b",", end, call_end)
        stop = after + 1 if after >= 0 else end
        while stop < call_end and self.source[stop : stop + 1] in (b" ", b"\t", b"\n", b"\r"):
            stop += 1
        self.add(arg.lineno, start, stop, "", call, shown)


def find_mutants(path: Path) -> list[Mutant]:
    source = path.read_bytes()
    finder = MutantFinder(source)
    tree = ast.parse(source)
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            child.parent = parent
    finder.visit(tree)
    unique = {(m.start, m.end, m.new): m for m in finder.mutants}  # an operator may be found twice
    return sorted(unique.values(), key=lambda m: (m.start, m.end))


COVERAGE_DRIVER = r'''
import json, sys
import coverage
target, out, args = sys.argv[1], sys.argv[2], sys.argv[3:]
cov = coverage.Coverage(data_file=None, include=[target])
cov.start()
import pytest

class PerTestContext:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        cov.switch_context(item.nodeid)
        yield
        cov.switch_context("")

rc = pytest.main(args, plugins=[PerTestContext()])
cov.stop()
data = cov.get_data()
files = [f for f in data.measured_files() if f == target]
lines = data.contexts_by_lineno(files[0]) if files else {}
json.dump({"rc": int(rc), "lines": {str(k): sorted(v) for k, v in lines.items()}}, open(out, "w"))
'''


def run(cmd: list[str], cwd: Path, env: dict, timeout: float | None) -> tuple[int | None, str]:
    """(return code, output); None as the code when the timeout was hit (the whole process group is killed)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", help="the module to mutate, relative to the repository root")
    parser.add_argument("tests", nargs="+", help="the test file(s) whose tests may kill the mutants")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per mutant (default: 3 x the baseline run of all the tests + 10)")
    parser.add_argument("--lines", help="only mutate lines in this range, e.g. 20-60")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = parser.parse_args(argv)

    module = Path(args.module)
    if not (ROOT / module).is_file():
        parser.error(f"no module {ROOT / module}")
    mutants = find_mutants(ROOT / module)
    if args.lines:
        lo, _, hi = args.lines.partition("-")
        mutants = [m for m in mutants if int(lo) <= m.line <= int(hi or lo)]
    if args.list:
        for m in mutants:
            print(f"{module}:{m.line}  {m.original} -> {m.mutant}")
        print(f"{len(mutants)} mutants")
        return 0

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="mutation_pass_"))
    copy = work / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(*IGNORED))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "PYTHONDONTWRITEBYTECODE": "1"}  # no stale .pyc: a mutant of the same size in the same second is recompiled
    target = copy / module
    try:
        (work / "driver.py").write_text(COVERAGE_DRIVER)
        t0 = time.perf_counter()
        rc, out = run([sys.executable, str(work / "driver.py"), str(target), str(work / "cov.json"), *args.tests,
                       "-q", "-p", "no:cacheprovider"], copy, env, None)
        baseline_s = time.perf_counter() - t0
        result = json.loads((work / "cov.json").read_text()) if (work / "cov.json").is_file() else {"rc": rc}
        if result["rc"] != 0:
            print(out[-3000:])
            print(f"the tests fail (or were not found) on the unmutated code (pytest exit code {result['rc']}): "
                  "fix that first")
            return 2
        covering = {int(k): [c for c in v if c] for k, v in result["lines"].items()}  # "": import time only
        timeout = args.timeout or 3 * baseline_s + 10
        print(f"{module}: {len(mutants)} mutants; baseline with coverage {baseline_s:.1f} s "
              f"({out.strip().splitlines()[-1]}); timeout {timeout:.0f} s per mutant", flush=True)

        original = target.read_bytes()
        counts = {"killed": 0, "survived": 0, "not covered": 0, "timeout": 0}
        survivors = []
        for i, m in enumerate(mutants, 1):
            if m.line not in covering:
                counts["not covered"] += 1
                survivors.append((m, "not covered"))
                continue
            tests = covering[m.line] or list(args.tests)  # import-time lines: the whole test file
            target.write_bytes(original[: m.start] + m.new + original[m.end :])
            try:
                rc, out = run([sys.executable, "-m", "pytest", *PYTEST_FLAGS, *tests], copy, env, timeout)
            finally:
                target.write_bytes(original)
            status = "timeout" if rc is None else "survived" if rc == 0 else "killed"
            if rc == 5:  # no tests ran: should not happen with node ids from the coverage map
                status = "survived"
            counts[status] += 1
            if status == "survived":
                survivors.append((m, f"{len(tests)} tests ran"))
            print(f"  [{i}/{len(mutants)}] {status:8s} {module}:{m.line}  {m.original} -> {m.mutant}", flush=True)

        total = time.perf_counter() - started
        print(f"\nmutants: {len(mutants)}, killed: {counts['killed']}, survived: {counts['survived'] + counts['not covered']}"
              f" ({counts['not covered']} not covered), timeouts: {counts['timeout']}, in {total:.0f} s")
        for m, why in survivors:
            print(f"{module}:{m.line}  {m.original} -> {m.mutant}    [{why}]")
        return 0
    finally:
        if args.keep:
            print(f"copy kept at {copy}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
