"""Reading evaluations: tasks (items with a known answer), the conditions each is scored under, the report.

A task builds `Item`s: what the target reads (token ids, with the masked control before `n_prefix`), the
question, the reference answer, and optionally identification candidates or a class label. `harness.score`
answers every item under the decoder and each faithfulness control, so every score comes with the margin
that says how much of it comes from the activations.
"""
