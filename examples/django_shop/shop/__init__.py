"""The shop's Django app: the ``Product`` model over the shared ``products`` table, and views."""
