"""The paper's four Amazon 2014 datasets (fMRLRec, arXiv 2409.16627, Table 1)."""

TABLE1 = {  # (#User, #Item, #Inter) of the paper's Table 1
    "beauty": (22363, 12101, 198502),
    "sports": (35598, 18357, 296337),
    "toys": (19412, 11924, 167597),
    "clothing": (39387, 23033, 278677),
}
