"""Checks of what would be published: the sdist, the wheel, the README's install lines.

Run by tox's ``package`` environment (``scripts/test -e package``), not by the
test suite: they build the distributions and install them outside the checkout.
"""
