"""One hostile-input case, run by ``bench/hostile_bench.py`` in a fresh process: builds the
input under ``work``, runs the document stages, writes ``{"outcome": ...}`` to ``out``.

Uses only APIs that earlier checkouts have too, so the same case measures both."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

from genai_ingest.config import Settings
from genai_ingest.failures.errors import IngestError, classify
from genai_ingest.failures.policies import RetryPolicy
from genai_ingest.parse.isolation import parse_isolated
from genai_ingest.sources.discovery import discover, fetch
from genai_ingest.text.clean import clean_text
from genai_ingest.text.validate import validate_text

REPO = Path(__file__).resolve().parent.parent
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
OUTSIDE = "root:x:0:0:root:/root:/bin/bash"
ONCE = RetryPolicy(attempts=1)


def settings() -> Settings:
    s = Settings()
    s.sources = s.sources.model_copy(update={"download_timeout_s": 10})
    s.parse = s.parse.model_copy(update={"workers": 1})
    return s


def run_folder(folder: Path | str) -> list[tuple[str, str]]:
    """(name, outcome text) per listed entry; the outcome holds the chunk texts if indexed."""
    s = settings()
    results = []
    for ref in discover([str(folder)], s.sources):
        try:
            results.append((ref.name, "indexed: " + "\n".join(stages(ref, s))))
        except Exception as exc:
            error = exc if isinstance(exc, IngestError) else classify(exc, "parse")
            results.append((ref.name, f"failed {error.code}: {error.reason[:80]}"))
    return results


def stages(ref, s: Settings) -> list[str]:
    """fetch, parse (worker pool), clean, validate, chunk: the texts that would be indexed."""
    from transformers import AutoTokenizer

    from genai_ingest.embed.local import resolve_model_path
    from genai_ingest.text.chunk import Chunker

    raw = fetch(ref, s.sources, ONCE)
    parsed = parse_isolated(raw.data, ref.name, s.parse, uri=ref.uri, doc_id=ref.doc_id)
    text = clean_text(parsed.text, s.clean)
    metadata = {"doc_id": ref.doc_id, "source": ref.uri, "version": raw.version}
    validated = validate_text(text, {**metadata, **parsed.metadata}, s.validation)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(s.embed.model))
    chunks = Chunker(tokenizer, s.chunk, 256).split(ref.doc_id, validated.text, metadata)
    return [c.text + " " + str(c.metadata) for c in chunks]


def summary(results: list[tuple[str, str]], bad: str | None = None) -> str:
    indexed = sum(outcome.startswith("indexed") for _, outcome in results)
    failed = sorted({o.split(":", 1)[0].removeprefix("failed ") for _, o in results} - {"indexed"})
    leaked = bad is not None and any(bad in outcome for _, outcome in results)
    text = f"{len(results)} listed, {indexed} indexed, failed: {', '.join(failed) or '-'}"
    return ("LEAKED; " if leaked else "") + text


def case_secrets_csv(work: Path) -> str:
    (work / "docs").mkdir()
    (work / "docs" / "credentials.csv").write_text(
        "User name,Password,Access key ID,Secret access key,Console login link\n"
        f"bot,Tr0ub4dor&3,AKIAIOSFODNN7EXAMPLE,{SECRET},https://1.signin.aws.amazon.com/console\n"
    )
    return summary(run_folder(work / "docs"), SECRET)


def case_secrets_escaped_md(work: Path) -> str:
    (work / "docs").mkdir()
    (work / "docs" / "notes.md").write_text(
        f"# Deploy notes\n\nThe job reads aws_secret_access_key = {SECRET} from the vault.\n"
    )
    return summary(run_folder(work / "docs"), SECRET)


def case_symlink_out(work: Path) -> str:
    (work / "docs").mkdir()
    (work / "passwd").write_text(OUTSIDE)
    (work / "docs" / "ok.txt").write_text("An ordinary document about rivers and hills.")
    (work / "docs" / "passwd").symlink_to(work / "passwd")
    (work / "docs" / "environ").symlink_to("/proc/self/environ")
    return summary(run_folder(work / "docs"), OUTSIDE)


def case_awkward_names(work: Path) -> str:
    names = ["budget 2024.txt", "budget%202024.txt", "naïve.txt", "a $HOME.txt", "new\nline.txt"]
    (work / "docs").mkdir()
    for index, name in enumerate(names):
        (work / "docs" / name).write_text(f"Document {index} talks about topic number {index}.")
    results = run_folder(work / "docs")
    right = sum(f"topic number {names.index(n)}" in o for n, o in results if n in names)
    return f"{right}/{len(names)} indexed with their own text; " + summary(results)


def case_special_files(work: Path) -> str:
    docs = work / "docs"
    docs.mkdir()
    (docs / "ok.txt").write_text("An ordinary document about rivers and hills.")
    os.mkfifo(docs / "pipe")
    (docs / "loop-a").symlink_to(docs / "loop-b")
    (docs / "loop-b").symlink_to(docs / "loop-a")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(docs / "socket"))
        return summary(run_folder(docs))


def case_path_max(work: Path) -> str:
    (work / "sibling.txt").write_text("The normal sibling document about rivers.")
    fd = os.open(work, os.O_RDONLY)
    for _ in range(20):
        os.mkdir("d" * 250, dir_fd=fd)
        inner = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(os.open("deep.txt", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)
    try:
        return summary(run_folder(work))
    except Exception as exc:
        return f"run aborted: {type(exc).__name__}"


def case_pptx_bomb(work: Path) -> str:
    template = REPO / "tests" / "data" / "parse" / "unstructured_sample-presentation.pptx"
    out = BytesIO()
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename != "ppt/slides/slide1.xml":
                z.writestr(item, data)
                continue
            head, tail = data.split(b"</a:t>", 1)
            with z.open(item.filename, "w", force_zip64=True) as slide:
                slide.write(head)
                for _ in range(1100):
                    slide.write(b"A" * (1 << 20))
                slide.write(b"</a:t>" + tail)
    (work / "docs").mkdir()
    (work / "docs" / "bomb.pptx").write_bytes(out.getvalue())
    return summary(run_folder(work / "docs"))


def case_single_line_50mb(work: Path) -> str:
    (work / "docs").mkdir()
    words = b"alpha beta gamma delta river mountain paper window "
    (work / "docs" / "line.txt").write_bytes(words * (50_000_000 // len(words)))
    return summary(run_folder(work / "docs"))


def case_blank_pages_5000(work: Path) -> str:
    import pikepdf

    pdf = pikepdf.Pdf.new()
    for _ in range(5000):
        pdf.add_blank_page(page_size=(612, 792))
    (work / "docs").mkdir()
    pdf.save(work / "docs" / "blank.pdf")
    return summary(run_folder(work / "docs"))


def case_flate_bomb_pdf(work: Path) -> str:
    """One page whose content stream (~1 MB) inflates to 1 GB after a line of real text."""
    import pikepdf

    pdf = pikepdf.Pdf.new()
    page = pdf.add_blank_page(page_size=(612, 792))
    font = pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1)
    font.BaseFont = pikepdf.Name.Helvetica
    page.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))
    packer = zlib.compressobj(9)
    parts = [packer.compress(b"BT /F1 12 Tf 72 720 Td (River water quality report) Tj ET\n")]
    parts += [packer.compress(b"q Q\n" * (1 << 18)) for _ in range(1024)]
    page.Contents = pdf.make_stream(b"")
    page.Contents.write(b"".join([*parts, packer.flush()]), filter=pikepdf.Name.FlateDecode)
    (work / "docs").mkdir()
    pdf.save(work / "docs" / "bomb.pdf")
    return summary(run_folder(work / "docs"))


def case_near_limit_png(work: Path) -> str:
    """A white 9,400 x 9,400 PNG (88 Mpx, just under Pillow's decompression-bomb limit)
    with one line of text; ~200 KB on disk."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (9400, 9400), 255)
    ImageDraw.Draw(image).text((200, 200), "River water quality report", fill=0)
    (work / "docs").mkdir()
    image.save(work / "docs" / "big.png", optimize=True)
    return summary(run_folder(work / "docs"))


def case_csv_1m_columns(work: Path) -> str:
    (work / "docs").mkdir()
    header = ",".join(f"c{i}" for i in range(1_000_000))
    (work / "docs" / "wide.csv").write_text(header + "\n" + ",".join(["1"] * 1_000_000) + "\n")
    return summary(run_folder(work / "docs"))


def case_nested_divs(work: Path) -> str:
    (work / "docs").mkdir()
    body = b"<div>" * 100_000 + b"deep text" + b"</div>" * 100_000
    (work / "docs" / "nested.html").write_bytes(b"<html><body>" + body + b"</body></html>")
    return summary(run_folder(work / "docs"))


class _Drip(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        for _ in range(100):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(5)

    def log_message(self, *args: object) -> None:
        pass


def case_drip_download(work: Path) -> str:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    s = settings()
    s.sources = s.sources.model_copy(update={"allow_private_networks": True})
    url = f"http://127.0.0.1:{httpd.server_address[1]}/drip.txt"
    try:
        fetch(discover([url], s.sources)[0], s.sources, ONCE)
        return "downloaded"
    except IngestError as exc:
        return f"failed {exc.code} ({exc.kind.value})"


def case_metadata_url(work: Path) -> str:
    s = settings()
    url = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    try:
        fetch(discover([url], s.sources)[0], s.sources, ONCE)
        return "fetched"
    except IngestError as exc:
        return f"failed {exc.code}: {exc.reason[:60]}"


def main() -> None:
    case, work, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    outcome = globals()[f"case_{case}"](work)
    out.write_text(json.dumps({"outcome": outcome}))
    os._exit(0)  # do not wait for dripping servers or parser pools


if __name__ == "__main__":
    main()
