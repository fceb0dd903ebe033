/*
 * core.deblur.Atrous: a VapourSynth plugin whose filter is written in Python (vsdeblur.vs).
 *
 * VapourSynth has no way to register a namespace from Python, so this shim registers it
 * natively and forwards each call. It must stay cheap: every VapourSynth core autoloads it.
 *
 *  - Loading touches no Python: init only registers the functions.
 *  - The first Atrous call on a core takes the GIL, imports vsdeblur._vsbridge and calls its
 *    register(), which passes the Python implementation back through RegisterImpl (a Python
 *    callable can only reach C as a VapourSynth function argument). Later calls forward the
 *    argument map untouched with callFunction; VapourSynth's Python layer takes the GIL,
 *    converts the map to keyword arguments, and turns exceptions into errors.
 *  - No link against libpython: its symbols are looked up at run time in the process, where
 *    the python executable (or vspipe, which loads libpython globally) has put them. So one
 *    build serves every Python version.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "VapourSynth4.h"
#include "atrous_args.h" /* ATROUS_ARGS, generated from vsdeblur/config.py */

/* Stable-ABI Python functions, with PyObject * as void * (no Python headers needed). */
typedef struct {
    int (*IsInitialized)(void);
    int (*GILState_Ensure)(void); /* returns a PyGILState_STATE, an enum */
    void (*GILState_Release)(int);
    void *(*Import_ImportModule)(const char *);
    void *(*Object_GetAttrString)(void *, const char *);
    void *(*Object_CallObject)(void *, void *);
    void *(*Object_Str)(void *);
    void *(*Unicode_AsUTF8String)(void *);
    char *(*Bytes_AsString)(void *);
    void (*Err_Fetch)(void **, void **, void **);
    void (*DecRef)(void *);
} Python;

/* One per core: VapourSynth runs plugin init once for every core it creates. */
typedef struct {
    pthread_mutex_t lock; /* recursive: register() calls RegisterImpl while Atrous holds it */
    VSFunction *impl;
} State;

static int find_python(Python *py) {
#define FIND(field, symbol) if (!(*(void **)&py->field = dlsym(RTLD_DEFAULT, symbol))) return 0
    FIND(IsInitialized, "Py_IsInitialized");
    FIND(GILState_Ensure, "PyGILState_Ensure");
    FIND(GILState_Release, "PyGILState_Release");
    FIND(Import_ImportModule, "PyImport_ImportModule");
    FIND(Object_GetAttrString, "PyObject_GetAttrString");
    FIND(Object_CallObject, "PyObject_CallObject");
    FIND(Object_Str, "PyObject_Str");
    FIND(Unicode_AsUTF8String, "PyUnicode_AsUTF8String");
    FIND(Bytes_AsString, "PyBytes_AsString");
    FIND(Err_Fetch, "PyErr_Fetch");
    FIND(DecRef, "Py_DecRef");
#undef FIND
    return py->IsInitialized();
}

/* The pending Python exception as text (and cleared); needs the GIL. */
static void python_error(const Python *py, char *message, size_t size) {
    void *type = NULL, *value = NULL, *traceback = NULL;
    py->Err_Fetch(&type, &value, &traceback);
    snprintf(message, size, "unknown Python error");
    void *text = (value || type) ? py->Object_Str(value ? value : type) : NULL;
    void *utf8 = text ? py->Unicode_AsUTF8String(text) : NULL;
    if (utf8)
        snprintf(message, size, "%s", py->Bytes_AsString(utf8));
    py->DecRef(utf8);
    py->DecRef(text);
    py->DecRef(type);
    py->DecRef(value);
    py->DecRef(traceback);
    py->Err_Fetch(&type, &value, &traceback); /* a failure of Str itself: drop it */
    py->DecRef(type);
    py->DecRef(value);
    py->DecRef(traceback);
}

/* Import the bridge and let it register the implementation; 0 and a message on failure. */
static int load_implementation(char *message, size_t size) {
    Python py;
    if (!find_python(&py)) {
        snprintf(message, size, "deblur.Atrous is written in Python: it needs a Python host "
                                "(python or vspipe) with the vsdeblur package installed");
        return 0;
    }
    int gil = py.GILState_Ensure();
    void *result = NULL;
    void *module = py.Import_ImportModule("vsdeblur._vsbridge");
    void *function = module ? py.Object_GetAttrString(module, "register") : NULL;
    if (function)
        result = py.Object_CallObject(function, NULL);
    if (!result) {
        char detail[900];
        python_error(&py, detail, sizeof detail);
        snprintf(message, size, "deblur.Atrous: could not load vsdeblur (%s)", detail);
    }
    py.DecRef(result);
    py.DecRef(function);
    py.DecRef(module);
    py.GILState_Release(gil);
    return result != NULL;
}

static void VS_CC register_impl(const VSMap *in, VSMap *out, void *data, VSCore *core, const VSAPI *vsapi) {
    (void)out;
    (void)core;
    State *state = data;
    VSFunction *impl = vsapi->mapGetFunction(in, "impl", 0, NULL);
    pthread_mutex_lock(&state->lock);
    if (state->impl)
        vsapi->freeFunction(state->impl);
    state->impl = impl;
    pthread_mutex_unlock(&state->lock);
}

static void VS_CC atrous(const VSMap *in, VSMap *out, void *data, VSCore *core, const VSAPI *vsapi) {
    (void)core;
    State *state = data;
    char message[1024];
    pthread_mutex_lock(&state->lock);
    if (!state->impl && !load_implementation(message, sizeof message)) {
        pthread_mutex_unlock(&state->lock);
        vsapi->mapSetError(out, message);
        return;
    }
    VSFunction *impl = state->impl ? vsapi->addFunctionRef(state->impl) : NULL;
    pthread_mutex_unlock(&state->lock);
    if (!impl) {
        vsapi->mapSetError(out, "deblur.Atrous: vsdeblur._vsbridge.register() registered nothing for this core");
        return;
    }
    VSMap *result = vsapi->createMap();
    vsapi->callFunction(impl, in, result);
    vsapi->freeFunction(impl);
    const char *error = vsapi->mapGetError(result);
    if (error) {
        /* A usage error (vsdeblur.vs raises vs.Error("deblur.Atrous: ...")) is reported as
         * its one line; anything else keeps the Python traceback that VapourSynth formatted. */
        const char *usage = strstr(error, "vapoursynth.Error: deblur.Atrous: ");
        if (usage) {
            usage += strlen("vapoursynth.Error: ");
            snprintf(message, sizeof message, "%.*s", (int)strcspn(usage, "\n"), usage);
        }
        vsapi->mapSetError(out, usage ? message : error);
    } else {
        int missing = 0;
        VSNode *node = vsapi->mapGetNode(result, "val", 0, &missing);
        if (missing)
            vsapi->mapSetError(out, "deblur.Atrous: the Python implementation returned no clip");
        else
            vsapi->mapConsumeNode(out, "clip", node, maReplace);
    }
    vsapi->freeMap(result);
}

VS_EXTERNAL_API(void) VapourSynthPluginInit2(VSPlugin *plugin, const VSPLUGINAPI *api) {
    State *state = calloc(1, sizeof *state); /* lives as long as the process: cores have no plugin destructor */
    pthread_mutexattr_t attributes;
    pthread_mutexattr_init(&attributes);
    pthread_mutexattr_settype(&attributes, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&state->lock, &attributes);
    pthread_mutexattr_destroy(&attributes);
    /* API 4.0: nothing newer is used, so every R74+ core loads it */
    api->configPlugin("io.github.vsdeblur", "deblur", "vsdeblur: video motion deblurring (Brehm et al. 2020)",
                      VS_MAKE_VERSION(0, 1), VS_MAKE_VERSION(4, 0), 0, plugin);
    api->registerFunction("Atrous", ATROUS_ARGS, "clip:vnode;", atrous, state, plugin);
    /* internal: how vsdeblur._vsbridge hands over the Python implementation */
    api->registerFunction("RegisterImpl", "impl:func;", "", register_impl, state, plugin);
}
