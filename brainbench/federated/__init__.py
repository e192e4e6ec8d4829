"""Federated decoding on Flower: sites that cannot share brain data train one decoder (PmcmFL and baselines).

Modules, one job each:

* :mod:`~brainbench.federated.config`: the run's settings (flat, Flower's run config carries them);
* :mod:`~brainbench.federated.partition`: which trials each site holds; which modalities are missing;
* :mod:`~brainbench.federated.prototypes`: PmcmFL's prototype library (update, aggregation, contrast);
* :mod:`~brainbench.federated.model`: the network (per-site fMRI inputs, federated trunk, fusion, head);
* :mod:`~brainbench.federated.site_data`: a site's trials through the ordinary DataModule;
* :mod:`~brainbench.federated.local`: a site's round (losses, prototypes, evaluation);
* :mod:`~brainbench.federated.client_app`, :mod:`~brainbench.federated.server_app`: the Flower apps;
* :mod:`~brainbench.federated.simulation`, :mod:`~brainbench.federated.deployment`: the two ways to run them;
* :mod:`~brainbench.federated.run`: ``brainbench federate`` and its leaderboard row.

Only the Flower modules (``engine``, ``client_app``, ``server_app``, ``simulation``, ``deployment``) import
``flwr``, lazily: the rest of brainbench imports without it, and a missing Flower raises one error naming
``pip install 'brainbench[federated]'`` (:func:`~brainbench.federated.engine.require_flower`).
"""
