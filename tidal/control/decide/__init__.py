"""Pure decisions of a reconcile pass: a snapshot and an explicit `now` in, typed commands (and new memory) out.

A pass runs them in sequence (observed -> notices -> autoscaling -> replicas ->
placement -> capacity -> placement -> drained -> routing) and each step reads a
snapshot taken after the previous step's commands were executed: the store is
re-read rather than the commands applied to the snapshot in memory. Re-reading
costs a few SQLite queries on one machine, and it means the next step sees what
really happened (ids the store allocated, a start that failed, a launch the
provider refused) without a second model of every command's effect.
"""
