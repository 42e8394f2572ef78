"""Every report writer of the project: results dicts in, Markdown / HTML / LaTeX / CSV / PNG out.

Report modules format numbers that experiments already computed; they compute no statistics.

``markdown``: the one number formatter and the one "mean [low, high]" formatter, Markdown tables;
``html``: ``write_report`` (``<stem>.md`` and a self-contained ``<stem>.html``); ``plots``: every
figure; ``tables``: paper tables (long CSV, booktabs LaTeX); ``run``: the main job's report, built
from ``results.json``; ``fidelity``: ``fidelity.md``; ``ope``: the OPE section; ``obd``: the Open
Bandit Dataset report; ``aggregate``: the report of a sweep.
"""
