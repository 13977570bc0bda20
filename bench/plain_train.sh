#!/bin/sh
# The limit bench/merge.py holds `paradev merge` to: what git alone does to land
# COUNT agent branches, one after another, with no journal and no checks.
# Per branch: keep a backup ref, rebase the branch onto main in its agent's
# worktree, check it out in one prepared gate worktree and run the gate there,
# fast-forward main, push main to the remote.
#
# usage: plain_train.sh REPO WORKTREES GATE_WORKTREE COUNT [GATE_COMMAND]
set -eu
repo=$1 trees=$2 gate=$3 count=$4 command=${5:-true}
i=1
while [ "$i" -le "$count" ]; do
    branch="parallel-dev/agent-$i"
    head=$(git -C "$repo" rev-parse "refs/heads/$branch")
    git -C "$repo" update-ref "refs/paradev/backup/$branch/plain" "$head"
    git -C "$trees/agent-$i" rebase -q main
    git -C "$gate" checkout -q --detach "$branch"
    (cd "$gate" && sh -c "$command")
    git -C "$repo" merge -q --ff-only "$branch"
    git -C "$repo" push -q origin main
    i=$((i + 1))
done
