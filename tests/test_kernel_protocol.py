"""The Jupyter messaging protocol, checked by `jupyter_kernel_test` against a real kernel.

Every sample that `jupyter_kernel_test.KernelTests` knows is filled in, so none of its tests
skips. The same suite runs on the asyncio kernel (`async`) and the trio kernel (`async-trio`),
both installed by `conftest.py`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, ClassVar

import jupyter_kernel_test as jkt

# Import the module, not the classes: pytest collects every `TestCase` in a module's namespace,
# and the bare base classes would start a `python3` kernel.


class AsyncKernelProtocolTests(jkt.KernelTests):
    """The protocol suite on the asyncio kernel."""

    kernel_name = "async"

    @classmethod
    def setUpClass(cls) -> None:
        """Start the kernel with its own IPython dir: history samples see only these cells."""
        from jupyter_client.manager import start_new_kernel

        cls._ipython_dir = tempfile.TemporaryDirectory(prefix="ipython-")
        env = {**os.environ, "IPYTHONDIR": cls._ipython_dir.name}
        cls.km, cls.kc = start_new_kernel(kernel_name=cls.kernel_name, env=env)

    @classmethod
    def tearDownClass(cls) -> None:
        """Stop the kernel and remove its IPython dir."""
        super().tearDownClass()
        cls._ipython_dir.cleanup()

    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('to stderr', file=sys.stderr)"

    completion_samples: ClassVar[list[dict[str, Any]]] = [
        {"text": "zi", "matches": {"zip"}},
        {"text": "pri", "matches": {"print"}},
        {"text": "impo", "matches": {"import"}},
        {"text": "import sys\nsys.ver", "matches": {"version", "version_info"}},
        {"text": "%tim", "matches": {"%time", "%%time", "%timeit", "%%timeit"}},
    ]

    complete_code_samples: ClassVar[list[str]] = [
        "1",
        "print('hello, world')",
        "def f(x):\n  return x*2\n\n",
        "import os",
    ]
    incomplete_code_samples: ClassVar[list[str]] = [
        "print('''hello",
        "def f(x):\n  x*2",
        "for i in range(3):",
        "x = (1 +",
    ]
    invalid_code_samples: ClassVar[list[str]] = ["import = 7q", "1+1]", "@@@"]

    code_page_something = "zip?"

    code_generate_error = "raise ValueError('protocol test error')"

    code_execute_result: ClassVar[list[dict[str, str]]] = [
        {"code": "6*7", "result": "42"},
        {"code": "'a' + 'b'", "result": "'ab'"},
        {"code": "[1, 2][-1]", "result": "2"},
        {
            "code": "from IPython.display import HTML\nHTML('<b>bold</b>')",
            "mime": "text/html",
            "result": "<b>bold</b>",
        },
    ]

    code_display_data: ClassVar[list[dict[str, str]]] = [
        {
            "code": "from IPython.display import HTML, display\ndisplay(HTML('<b>test</b>'))",
            "mime": "text/html",
        },
        {
            "code": "from IPython.display import Math, display\ndisplay(Math(r'\\frac{1}{2}'))",
            "mime": "text/latex",
        },
        {"code": "display({'text/markdown': '*md*'}, raw=True)", "mime": "text/markdown"},
    ]

    code_history_pattern = "6*7"
    supported_history_operations = ("tail", "range", "search")

    code_inspect_sample = "zip"

    code_clear_output = "from IPython.display import clear_output\nclear_output()"


class AsyncTrioKernelProtocolTests(AsyncKernelProtocolTests):
    """The protocol suite on the trio kernel."""

    kernel_name = "async-trio"


class AsyncKernelIopubWelcomeTests(jkt.IopubWelcomeTests):
    """JEP 65: the first iopub message a new subscriber gets is `iopub_welcome`."""

    kernel_name = "async"
    support_iopub_welcome = True


class AsyncTrioKernelIopubWelcomeTests(AsyncKernelIopubWelcomeTests):
    """JEP 65 on the trio kernel."""

    kernel_name = "async-trio"
