"""Keep the shop's state (assets, SQLite file, disk cache) out of the checkout."""

from examples.shop_common.testing import isolate_state_dir

isolate_state_dir()
