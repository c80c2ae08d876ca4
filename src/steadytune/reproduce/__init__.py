"""`steadytune reproduce`: the four papers' claims re-tested on one model, with verdicts.

design     -- scales, arms and their study specs at the published and at a learning lr
statistics -- the tests, pooled over tasks, each checked against its reference (scipy, statsmodels)
claims/    -- one module per paper: each claim's effect, test and verdict thresholds
landscapes -- Hao et al.'s measurements of runs with snapshots: curvature, width, rollback, alignment
runner     -- lr check, studies and measurements, resumable in one store; the data per setting
verdicts   -- Holm across the table and the verdict rules
pages      -- CSV, Markdown and HTML
"""
