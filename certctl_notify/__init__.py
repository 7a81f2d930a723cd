"""certctl-notify core: settings, model, store, intake, delivery, retry policy, channels, operator actions,
sweep and publishing. No Flask and no worker code: `workers`, `api` and `cli` build on it.

The README's "Where things live" names the home of each idea.
"""

__version__ = "0.1.0"
