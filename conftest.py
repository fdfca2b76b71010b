"""Collection settings for the whole checkout (tests/ and the doctests of src/dropkit).

The trainer integrations import their trainer at import time (that is how they give their
one-line install hint), so their doctests are only collected where the trainer is installed:
an environment without Lightning or transformers (the vision one) skips them.
"""

import importlib.util

collect_ignore = [
    f"src/dropkit/integrations/{name}.py"
    for name, module in (("lightning", "lightning"), ("transformers", "transformers"))
    if importlib.util.find_spec(module) is None
]
