"""The vote store and what flows in and out of it: votes, preference rows, prompt sets, the queue, exports."""
