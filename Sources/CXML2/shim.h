#include <libxml/xmlversion.h>
/* Foundation carries its own ICU module; libxml2's optional ICU include clashes with it when a
   Swift module imports both. No ICU API of libxml2 is used (only pointers to its encoders). */
#undef LIBXML_ICU_ENABLED
#include <libxml/parser.h>
#include <libxml/tree.h>
