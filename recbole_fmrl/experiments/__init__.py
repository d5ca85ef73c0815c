"""The paper's experiments: Table 2 and 3 (compare), Figure 3 (per-size results), Figure 4 (params),
hyper-parameter search (tune), and the tables and figures they write (reports)."""
