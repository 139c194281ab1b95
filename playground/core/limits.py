"""The engine's hard limits, in one place. Every entry point (page, API, CLI) goes through the
engine, so these hold whatever the widgets allow; README's Security section lists them."""

MAX_PROMPT_CHARS = 8000  # the user's turn in the playground, and each prompt of a prompt set
MAX_SYSTEM_CHARS = 4000
MAX_NEW_TOKENS = 2048  # per response
# Tokens of prompt+completion scored or trained on; longer rows are cut (training and the score table alike).
MAX_SEQUENCE_TOKENS = 1024
MIN_RESPONSES, MAX_RESPONSES = 2, 4  # responses compared in one vote (k)
MAX_VOTER_LEN = 64  # characters of a voter name
MAX_TRAIN_STEPS = 10_000  # a run holds the training lock; a typo like 1e6 steps should not block it for days
MAX_TRAIN_EPOCHS = 100.0
MAX_FILE_BYTES = 256 * 2**20  # an import or upload is read whole into memory
MAX_PROMPTS = 10_000  # per prompt set: one import is one transaction, and the queue reads the whole set
