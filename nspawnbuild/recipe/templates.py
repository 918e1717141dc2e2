"""Rendering ``template = true`` files: sandboxed Jinja2, bounded in time, output and memory.

A template is user code. Jinja's sandbox keeps it from reaching Python's internals, but not
from one call into C that allocates gigabytes or runs for hours (``'A' * 4000000000``,
``10 ** 10 ** 9``, a long loop). So the operators that can do that are checked from their
operands before they run, and each template renders in a forked child with an address-space
limit, a CPU limit and a deadline, writing nothing but its answer to a pipe. All templates of a
recipe share TEMPLATE_SECONDS and TEMPLATE_OUTPUT_BYTES, so that a recipe with many templates is
bounded as one with a single template is.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import jinja2
import jinja2.sandbox

from ..errors import Problem
from .model import FileEntry
from .sourcemap import KeyPath, SourceMap, locate

#: bounds on rendering the templates of one recipe (all of them together, but the source)
TEMPLATE_SECONDS: Final = 10.0
TEMPLATE_OUTPUT_BYTES: Final = 16 << 20
TEMPLATE_SOURCE_BYTES: Final = 1 << 20  # one template's source
TEMPLATE_MEMORY_BYTES: Final = 256 << 20  # what a rendering may allocate beyond what the process had
TEMPLATE_MAX_INT_BITS: Final = 1 << 20  # a ** b beyond this is refused before it is computed


class _BoundedSandbox(jinja2.sandbox.SandboxedEnvironment):
    """Jinja's sandbox, with ``*``, ``**`` and ``+`` checked before they run.

    One expression such as ``'A' * 4000000000`` or ``10 ** 10 ** 9`` is a single call into C
    that no time check can interrupt; it is refused from its operands instead. (Intercepted
    operators are also never folded at compile time.)"""

    intercepted_binops = frozenset({"*", "**", "+"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any,
                   right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)


_SIZED = (str, bytes, list, tuple)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Raise SecurityError when ``left OPERATOR right`` would be too large to compute."""
    limit = TEMPLATE_OUTPUT_BYTES
    length = None
    if operator == "*":
        seq, n = (left, right) if isinstance(left, _SIZED) else (right, left)
        if isinstance(seq, _SIZED) and isinstance(n, int):
            length = len(seq) * max(n, 0)
    elif operator == "+" and isinstance(left, _SIZED) and isinstance(right, _SIZED):
        length = len(left) + len(right)
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 \
            and abs(left) > 1 and right * abs(left).bit_length() > TEMPLATE_MAX_INT_BITS:
        raise jinja2.exceptions.SecurityError(
            f"'{left} ** {right}' would have more than {TEMPLATE_MAX_INT_BITS} bits")
    if length is not None and length > limit:
        raise jinja2.exceptions.SecurityError(
            f"'{operator}' would make a {type(left if isinstance(left, _SIZED) else right).__name__} "
            f"of {length} items; a template may make at most {limit}")


class _RenderFailed(Exception):
    """A template could not be rendered; ``str()`` is the message, ``hint`` how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


_CONTEXT_HINT = "the context has `recipe` (the resolved recipe) and `name`"


def render_templates(files: Sequence[FileEntry], context: Mapping[str, Any],
                     sources: SourceMap) -> tuple[list[FileEntry], list[Problem]]:
    """The entries with each ``template = true`` one rendered, and the problems of those that
    could not be (they are left out of the entries).

    ``context`` is what templates see: ``recipe`` (the resolved recipe) and ``name``."""
    out: list[FileEntry] = []
    problems: list[Problem] = []
    deadline = time.monotonic() + TEMPLATE_SECONDS
    budget = TEMPLATE_OUTPUT_BYTES
    for entry in files:
        if not entry.template:
            out.append(entry)
            continue
        try:
            data = _render_one(entry, context, deadline, budget)
        except _RenderFailed as e:
            problems.append(_problem(sources, entry, str(e), e.hint))
            continue
        budget -= len(data)
        out.append(FileEntry(entry.src, entry.dest, entry.mode, entry.owner, True,
                             entry.declared_in, entry.index, data))
    return out, problems


def _problem(sources: SourceMap, entry: FileEntry, message: str, hint: str | None) -> Problem:
    """A problem at the entry's ``src``, in the file that declared the entry, with its line."""
    key: KeyPath = ["files", entry.index, "src"]
    text = next((f.text for f in sources.files if f.path == entry.declared_in), "")
    return Problem(entry.declared_in, f"files[{entry.index}].src", message, hint,
                   locate(text, key))


def _render_one(entry: FileEntry, context: Mapping[str, Any], deadline: float, budget: int) -> bytes:
    """One template rendered to UTF-8 bytes, or _RenderFailed saying why not."""
    if len(entry.content) > TEMPLATE_SOURCE_BYTES:
        raise _RenderFailed(f"template {entry.src} is {len(entry.content)} bytes; a template may "
                            f"have at most {TEMPLATE_SOURCE_BYTES}",
                            "copy large files without template = true")
    try:
        source = entry.content.decode("utf-8")
    except UnicodeDecodeError:
        raise _RenderFailed(f"template {entry.src} is not UTF-8 text") from None
    seconds = deadline - time.monotonic()
    if seconds <= 0:
        raise _RenderFailed(f"template {entry.src} was not rendered: the templates of this "
                            f"recipe took more than {TEMPLATE_SECONDS:g} s together",
                            "templates are for small configuration files")
    status, payload = _in_child(lambda: _render_capped(source, context, budget,
                                                        time.monotonic() + seconds),
                                seconds, budget)
    if status == "ok":
        return payload
    message, hint = _failure(status, payload.decode("utf-8", "replace"), budget)
    raise _RenderFailed(f"template {entry.src} {message}", hint)


def _failure(status: str, detail: str, budget: int) -> tuple[str, str | None]:
    """The message (after "template SRC") and hint for a rendering that failed with ``status``."""
    if status == "template":
        return f"failed to render: {detail}", _CONTEXT_HINT
    if status == "error":
        return f"failed to render: {detail}", None
    if status == "size":
        limit = (f"{budget} bytes, the most" if budget == TEMPLATE_OUTPUT_BYTES else
                 f"the {budget} bytes left of the {TEMPLATE_OUTPUT_BYTES}")
        return (f"renders to more than {limit} a recipe's templates may render together",
                "templates are for configuration files; copy large files without template = true")
    if status == "memory":
        return (f"needs more than {TEMPLATE_MEMORY_BYTES >> 20} MiB of memory to render",
                "templates are for small configuration files")
    return (f"did not finish rendering within {TEMPLATE_SECONDS:g} s (the time a recipe's "
            "templates may take together)", "look for loops that run too long")


def _render_capped(source: str, context: Mapping[str, Any], budget: int, deadline: float
                   ) -> tuple[str, bytes]:
    """Render in chunks (jinja's generate), stopping past ``budget`` bytes or the deadline.

    Runs in the child: returns (status, payload) as _in_child passes them on."""
    try:
        template = _BoundedSandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                   autoescape=False).from_string(source)
        out = bytearray()  # not a list of chunks: a million small ones cost 40 bytes each
        for chunk in template.generate(context):
            out += chunk.encode("utf-8")
            if len(out) > budget:
                return "size", b""
            if time.monotonic() > deadline:
                return "time", b""
        return "ok", bytes(out)
    except MemoryError:
        return "memory", b""
    except jinja2.TemplateError as e:
        return "template", str(e).encode("utf-8", "replace")
    except Exception as e:  # the template is user code: {{ 1/0 }}, {{ name + 1 }}, ...
        return "error", f"{type(e).__name__}: {e}".encode("utf-8", "replace")


def _in_child(work: Callable[[], tuple[str, bytes]], seconds: float, max_payload: int
              ) -> tuple[str, bytes]:
    """Run ``work()`` -> (status, payload) in a forked child with bounded memory and time.

    A template is user code: in-process checks cannot interrupt one call into C that
    allocates gigabytes or runs for hours. The child has an address-space limit
    (TEMPLATE_MEMORY_BYTES above the parent's size) and a CPU limit, and is killed when it is
    not done ``seconds`` after it started; it writes nothing but its answer to a pipe."""
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(read_end)
        os.close(write_end)
        return "error", f"cannot start the rendering process: {e.strerror}".encode()
    if pid == 0:  # the child: whatever happens, it ends here and runs none of the parent's code
        try:
            os.close(read_end)
            _write_fully(write_end, _child_answer(work, seconds))
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        answer, killed = _read_answer(read_end, pid, time.monotonic() + seconds + 1,
                                      max_payload + 64)
    finally:
        os.close(read_end)
    status, _, payload = answer.partition(b"\n")
    if status:
        return status.decode(), payload
    # no answer: killed for time (by us, or SIGXCPU), or it could not even write (memory)
    return ("time" if killed in (signal.SIGKILL, signal.SIGXCPU) else "memory"), b""


def _child_answer(work: Callable[[], tuple[str, bytes]], seconds: float) -> bytes:
    """In the child: limit it, run ``work``, and frame its answer as ``STATUS\\nPAYLOAD``."""
    try:
        _limit_self(seconds)
        status, payload = work()
    except BaseException as e:  # anything at all is reported to the parent, as an answer
        status, payload = "error", f"{type(e).__name__}: {e}".encode("utf-8", "replace")
    return status.encode() + b"\n" + payload


def _limit_self(seconds: float) -> None:
    """In the child: cap the address space and the CPU time (it is killed past either)."""
    try:
        with open("/proc/self/statm") as fh:
            size = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = size + TEMPLATE_MEMORY_BYTES
        resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY
                                                else min(soft, hard), hard))
    except (OSError, ValueError):
        pass  # no /proc: the time limit still holds
    cpu = int(seconds) + 2
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu if hard == resource.RLIM_INFINITY
                                             else min(cpu, hard), hard))


def _write_fully(fd: int, data: bytes) -> None:
    """os.write until all of ``data`` is written (a pipe takes 64 KiB at a time)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_answer(fd: int, pid: int, deadline: float, limit: int) -> tuple[bytes, int | None]:
    """The child's answer (empty when it has none by ``deadline``: it is killed then) and the
    signal that ended it, if one did.

    The child is always reaped, also when the parent is interrupted."""
    chunks: list[bytes] = []
    size = 0
    done = False
    answer = b""
    poller = select.poll()  # not select(): a descriptor above 1023 is fine
    poller.register(fd, select.POLLIN)
    try:
        while size <= limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                break
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                done = True
                answer = b"".join(chunks)
                break
            chunks.append(chunk)
            size += len(chunk)
        else:
            answer = b"size\n"
    finally:
        if not done:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, wait_status = os.waitpid(pid, 0)
    return answer, (os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None)
