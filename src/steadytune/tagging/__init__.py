"""Token classification (named entities and other BIO-tagged spans): reading CoNLL/JSONL files, aligning word
tags to word pieces, a linear or CRF head, and entity-level scoring."""
