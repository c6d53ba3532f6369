"""The LTX-Video 0.9.x family: ``engine`` (LTXVideoEngine), ``request`` (the checked call),
``stages`` (one generation, stage by stage), ``plan`` (memory), and the family's components:
``sampling`` (diffusers' three pipelines' loops and guidance) and ``schedule`` (flow-match
schedules). Nothing here is imported by the LTX-2 family, nor the other way round."""
