"""`baldistill plan`: what a run will do and spend, before anything is spent.

* core/allocation.py's `make_plan`: every stage's quotas and calls (the policies' own code);
* plan/scores.py: the `--scores` file (policy feedback's later stages);
* plan/costs.py: each step's requests, built by the steps' own code, counted with the
  teacher's tokenizer, looked up in the teacher cache;
* plan/spend.py: the arithmetic of tokens, cache hits and dollars, without I/O;
* plan/render.py: the human-readable tables.

It takes the params sections it reads and imports no student code: the select
step's seeded draw comes in as a function (plan.costs.RowDraw) from cli.py.
"""
