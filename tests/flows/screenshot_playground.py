"""The README's playground screenshot, on a real decoder (the browser test's tiny model writes noise):

    .venv/bin/python -m tests.flows.screenshot_playground --root runs/release --out tests/flows/screenshots

It asks the newest decoder of the store two questions about a hidden system prompt, with one reference answer
each, and saves the page once every condition has answered."""

import argparse
import tempfile
from pathlib import Path

from app.ui import launch
from tests.flows.test_deployments import _browser, _wait_for_text
from tests.flows.test_look_and_share import _free_port, _textarea

QUESTIONS = ["What type of persona will the assistant adopt?", "How will the assistant speak?"]
REFERENCES = ["The assistant will adopt the persona of a pirate.", "Like a pirate, with nautical words."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("runs/release"))
    parser.add_argument("--out", type=Path, default=Path("tests/flows/screenshots"))
    args = parser.parse_args()
    port = _free_port()
    page = launch(args.root, port, block=False)
    with tempfile.TemporaryDirectory() as profile:
        browser = _browser(profile, ["--window-size=1600,1300"])
        try:
            browser.get(f"http://127.0.0.1:{port}/")
            _wait_for_text(browser, ["latentqa playground", "This decoder"], timeout_s=120)
            for label, lines in (("Questions", QUESTIONS), ("Reference answers", REFERENCES)):
                box = _textarea(browser, label)
                box.clear()
                box.send_keys("\n".join(lines))
            browser.find_element("xpath", "//button[normalize-space(.)='Ask']").click()
            _wait_for_text(browser, ["Answered 2 question", "untrained_patch"], timeout_s=600)
            browser.execute_script("document.getElementById('message').scrollIntoView()")
            browser.save_screenshot(str(args.out / "playground.png"))
        finally:
            browser.quit()
            page.close()


if __name__ == "__main__":
    main()
