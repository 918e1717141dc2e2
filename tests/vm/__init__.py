"""The VM test's target hosts: their recipes and the harness that builds and boots them."""
