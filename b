copy-isthmus voluntary_ctxt_switches:	145 nonvoluntary_ctxt_switches:	1 
shard-0-1 voluntary_ctxt_switches:	315 nonvoluntary_ctxt_switches:	0 
shard-1-2 voluntary_ctxt_switches:	311 nonvoluntary_ctxt_switches:	0 
shard-1-2 voluntary_ctxt_switches:	1 nonvoluntary_ctxt_switches:	0 
shard-0-1 voluntary_ctxt_switches:	1 nonvoluntary_ctxt_switches:	0 
isthmus-dormant voluntary_ctxt_switches:	1 nonvoluntary_ctxt_switches:	0 
isthmus-dormant voluntary_ctxt_switches:	1 nonvoluntary_ctxt_switches:	0 
