"""The widgets of notebooks 01, 02 and 03 in a real browser: JupyterLab headless, driven by Chromium.

What a learner does: open the notebook in JupyterLab, *Run All*, move a widget's slider (press
*Run Interact* where the widget has that button) and see its output change. nbval runs the same
notebooks' cells, but no kernel-side test can tell whether a widget renders and reacts in the
browser. Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (``.ci/run``
installs them); skipped, with the reason, where they are missing. ``I2V_SCREENSHOTS=DIR`` also saves
a screenshot of each widget after it moved (the README's picture comes from there).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import REPO  # tests/conftest.py

webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the dev extra)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromium-driver (apt-get install)"),
]

# notebook → how many widgets it shows; each: its first slider is moved, its output must change
NOTEBOOKS = {"01_forward_process.ipynb": 1, "02_reverse_process.ipynb": 2, "03_inside_svd.ipynb": 1}
RUN_ALL_S = 900  # fast mode; 02 trains two short fine-tunes and the from-nothing model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on the repository, fast mode, the app object exposed to the page's scripts."""
    port, token = _free_port(), "i2v-browser-test"
    # autosave off: the test runs the repository's own notebooks and must never write them back
    settings = tmp_path_factory.mktemp("lab-settings")
    docmanager = settings / "@jupyterlab" / "docmanager-extension"
    docmanager.mkdir(parents=True)
    (docmanager / "plugin.jupyterlab-settings").write_text('{"autosave": false}')
    env = dict(os.environ, I2V_FAST="1", JUPYTER_CONFIG_DIR=str(tmp_path_factory.mktemp("jupyter-config")),
               JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path_factory.mktemp("lab-workspaces")))
    log = open(tmp_path_factory.mktemp("lab") / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}",
                             "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False", "--allow-root"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"JupyterLab did not start: {open(log.name).read()[-2000:]}")
            time.sleep(0.5)
    yield url, token
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=opts)
    yield driver
    driver.quit()


def _wait(what, predicate, timeout: float, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


# how far Run All got: every code cell executed, the kernel idle; or the first error's text
_PROGRESS_JS = """
const panel = window.jupyterapp.shell.currentWidget;
if (!panel || !panel.content || !panel.sessionContext.session) return null;
const cells = panel.content.widgets.filter(c => c.model.type === 'code');
const tracebacks = [...panel.node.querySelectorAll('.jp-RenderedText')].filter(
    e => e.getAttribute('data-mime-type') === 'application/vnd.jupyter.error');
if (tracebacks.length) return {error: tracebacks[0].innerText.slice(-1500)};
const done = cells.every(c => c.model.executionCount !== null);
return {done: done && panel.sessionContext.session.kernel.status === 'idle', executed:
        cells.filter(c => c.model.executionCount !== null).length, cells: cells.length};
"""


@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
def test_widgets_render_and_react_in_jupyterlab(lab, browser, notebook):
    url, token = lab
    committed = (REPO / "notebooks" / notebook).read_bytes()
    browser.get(f"{url}/lab/tree/notebooks/{notebook}?token={token}&reset")
    _wait("JupyterLab and the notebook's kernel", lambda: browser.execute_script(
        "const p = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        "return !!(p && p.sessionContext && p.sessionContext.session && p.sessionContext.session.kernel"
        " && p.sessionContext.session.kernel.status === 'idle');"), 180)
    # a fresh run: the committed outputs and execution counts are cleared first, so "every cell has a
    # count" means this run reached it
    browser.execute_script(
        "const p = window.jupyterapp.shell.currentWidget;"
        "p.content.widgets.filter(c => c.model.type === 'code').forEach(c => {"
        "  c.model.outputs.clear(); c.model.executionCount = null; });"
        "window.jupyterapp.commands.execute('notebook:run-all-cells');")

    def finished():
        p = browser.execute_script(_PROGRESS_JS)
        if p and "error" in p:
            pytest.fail(f"{notebook}: a cell failed in the browser:\n{p['error']}")
        return p and p.get("done")

    _wait(f"{notebook}: Run All", finished, RUN_ALL_S, every=2)
    interacts = _wait("the widgets to render", lambda: (found := browser.find_elements(
        By.CSS_SELECTOR, ".widget-interact")) and len(found) >= NOTEBOOKS[notebook] and found, 60)
    assert len(interacts) == NOTEBOOKS[notebook]
    for k, box in enumerate(interacts):
        _move_a_slider_and_see_the_output_change(browser, box, f"{notebook[:2]}_widget{k}.png")
    assert (REPO / "notebooks" / notebook).read_bytes() == committed, "the browser saved over the notebook"


def _move_a_slider_and_see_the_output_change(browser, box, screenshot_name: str):
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    output = box.find_element(By.CSS_SELECTOR, ".widget-output")
    buttons = box.find_elements(By.CSS_SELECTOR, "button")
    if buttons:  # interact_manual: its output appears on the first press of Run Interact
        buttons[-1].click()
    before = _wait("the widget's first output", lambda: output.text.strip(), 300)
    handle = box.find_element(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
    handle.click()
    handle.send_keys(Keys.ARROW_RIGHT)
    if buttons:
        buttons[-1].click()
    after = _wait("the widget's output to change after its slider moved",
                  lambda: (t := output.text.strip()) and t != before and t, 300)
    assert after != before
    if os.environ.get("I2V_SCREENSHOTS"):
        os.makedirs(os.environ["I2V_SCREENSHOTS"], exist_ok=True)
        box.screenshot(os.path.join(os.environ["I2V_SCREENSHOTS"], screenshot_name))
